// Hit-testing of the pose editor view (pure function; the drawing is checked in the browser test).
import { test } from "node:test";
import assert from "node:assert/strict";

import { PoseModel } from "../../web/pose_editor/pose_state.js";
import { hitTest, HIT_RADIUS } from "../../web/pose_editor/view.js";

const BODY = "pose_keypoints_2d";
const frame = {
  canvas_width: 400, canvas_height: 400,
  people: [
    { [BODY]: [100, 100, 1, 0, 0, 0, ...Array(16 * 3).fill(0)], hand_left_keypoints_2d: [104, 100, 1, ...Array(20 * 3).fill(0)] },
    { [BODY]: [300, 300, 1, ...Array(17 * 3).fill(0)] },
  ],
};
const zoom2 = (x, y) => [x * 2 + 10, y * 2 + 20];

test("the nearest visible keypoint within the radius, in screen pixels", () => {
  const m = new PoseModel();
  m.load("", frame);
  assert.deepEqual(hitTest(m, zoom2, 610, 620), { person: 1, part: BODY, index: 0, ghost: false });
  assert.deepEqual(hitTest(m, zoom2, 610 + HIT_RADIUS - 1, 620), { person: 1, part: BODY, index: 0, ghost: false });
  assert.equal(hitTest(m, zoom2, 610 + HIT_RADIUS + 1, 620), null);
  // body nose at screen (210, 220), left-hand wrist at (218, 220): the nearer one wins
  assert.equal(hitTest(m, zoom2, 216, 220).part, "hand_left_keypoints_2d");
  assert.equal(hitTest(m, zoom2, 211, 220).part, BODY);
});

test("hidden keypoints are not hit, except as ghosts of the selected person", () => {
  const m = new PoseModel();
  m.load("", frame);
  m.hideKeypoint({ person: 1, part: BODY, index: 0 });
  assert.equal(hitTest(m, zoom2, 610, 620), null);
  m.select({ person: 1 });
  assert.deepEqual(hitTest(m, zoom2, 610, 620), { person: 1, part: BODY, index: 0, ghost: true });
  m.deletePerson(1);
  assert.equal(hitTest(m, zoom2, 610, 620), null, "deleted people are not hit");
});
