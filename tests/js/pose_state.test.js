// Unit tests of the pose editor's state model (web/pose_editor/pose_state.js): node --test tests/js/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { PoseModel, parseEdit, applyEdit, personToDict, EditError, LIMITS } from "../../web/pose_editor/pose_state.js";
import { LAYOUTS, leftRightSwap, bodyLimbs, defaultSkeleton } from "../../web/pose_editor/skeleton.js";

const CASES = JSON.parse(readFileSync(new URL("./fixtures/pose_edit_cases.json", import.meta.url)));
const BODY = "pose_keypoints_2d";

function body18(offsetX = 0) {
  // a simple OpenPose-18 person: joint i at (100 + 10 i + offsetX, 50 + 20 i), the left ear missing
  const flat = [];
  for (let i = 0; i < 18; i++) flat.push(...(i === 17 ? [0, 0, 0] : [100 + 10 * i + offsetX, 50 + 20 * i, 1]));
  return flat;
}

function inputFrame(n = 1) {
  const people = [];
  for (let p = 0; p < n; p++) people.push({ [BODY]: body18(200 * p), face_keypoints_2d: null, hand_left_keypoints_2d: null, hand_right_keypoints_2d: null });
  return { people, canvas_width: 640, canvas_height: 480 };
}

const xy = (frame, person, k) => frame.people[person][BODY].slice(3 * k, 3 * k + 3);

test("no edit: the input passes through and nothing is stored", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  assert.deepEqual(m.toFrame().people[0][BODY], body18());
  assert.equal(m.serialize(), "");
  assert.equal(m.width, 640);
  assert.equal(m.height, 480);
});

test("drag a joint: one undo step, stored per person and keypoint", () => {
  const m = new PoseModel();
  m.load("", inputFrame(2));
  const sel = { person: 1, part: BODY, index: 4 };
  assert.ok(m.beginDrag(sel));
  m.dragTo(350, 100);
  m.dragTo(352.5, 131.25);
  assert.ok(m.endDrag());
  assert.deepEqual(xy(m.toFrame(), 1, 4), [352.5, 131.25, 1]);
  const edit = JSON.parse(m.serialize());
  assert.deepEqual(edit.people, [{ source: 1, keypoints: { [BODY]: { 4: [352.5, 131.25] } } }]);
  assert.equal(edit.canvas_width, 640);
  assert.deepEqual(edit.input, inputFrame(2));
  assert.equal(m.undoStack.length, 1);
  m.undo();
  assert.deepEqual(xy(m.toFrame(), 1, 4), [340, 130, 1]);
  assert.equal(m.serialize(), "");
  m.redo();
  assert.deepEqual(xy(m.toFrame(), 1, 4), [352.5, 131.25, 1]);
});

test("drags are clamped to the canvas", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  m.moveKeypoint({ person: 0, part: BODY, index: 0 }, -50, 9999);
  assert.deepEqual(xy(m.toFrame(), 0, 0), [0, 480, 1]);
});

test("hide and restore a keypoint; a hidden point stays hidden through other edits", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  const sel = { person: 0, part: BODY, index: 3 };
  assert.ok(m.hideKeypoint(sel));
  assert.deepEqual(xy(m.toFrame(), 0, 3), [0, 0, 0]);
  assert.equal(m.moveKeypoint(sel, 10, 10), false, "a hidden point cannot be dragged");
  m.moveKeypoint({ person: 0, part: BODY, index: 2 }, 20, 20);
  assert.deepEqual(xy(m.toFrame(), 0, 3), [0, 0, 0]);
  assert.deepEqual(JSON.parse(m.serialize()).people[0].keypoints[BODY], { 2: [20, 20], 3: null });
  assert.ok(m.restoreKeypoint(sel));
  assert.deepEqual(xy(m.toFrame(), 0, 3), [130, 110, 1], "restored where it was");
  assert.equal(m.restoreKeypoint(sel), false, "restoring a visible point does nothing");
});

test("restoring a point that the input lacks guesses its place from the visible joints", () => {
  const m = new PoseModel();
  const frame = inputFrame();
  // exactly the default skeleton, scaled by 0.5 and shifted: the fit must put the missing ear where the default has it
  const def = defaultSkeleton("openpose18", 640, 480);
  frame.people[0][BODY] = def.flatMap(([x, y], i) => (i === 17 ? [0, 0, 0] : [x * 0.5 + 40, y * 0.5 + 30, 1]));
  m.load("", frame);
  m.restoreKeypoint({ person: 0, part: BODY, index: 17 });
  const [x, y, c] = xy(m.toFrame(), 0, 17);
  assert.ok(Math.abs(x - (def[17][0] * 0.5 + 40)) < 0.01 && Math.abs(y - (def[17][1] * 0.5 + 30)) < 0.01, `${x},${y}`);
  assert.equal(c, 1);
});

test("add a person from the default skeleton, delete a person", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  m.addPerson();
  let frame = m.toFrame();
  assert.equal(frame.people.length, 2);
  const added = frame.people[1][BODY];
  assert.equal(added.length, 54);
  assert.ok(added.filter((v, i) => i % 3 === 2).every((c) => c === 1), "every default joint is present");
  let edit = JSON.parse(m.serialize());
  assert.equal(edit.people.length, 1);
  assert.equal(edit.people[0].source, null);
  assert.deepEqual(edit.people[0].person[BODY], added);
  m.deletePerson(0);
  frame = m.toFrame();
  assert.equal(frame.people.length, 1);
  assert.deepEqual(frame.people[0][BODY], added);
  edit = JSON.parse(m.serialize());
  assert.deepEqual(edit.people[0], { source: 0, deleted: true });
  m.undo();
  m.undo();
  assert.equal(m.serialize(), "");
});

test("a new person takes the layout of the people already there", () => {
  const m = new PoseModel();
  const frame = inputFrame();
  frame.people[0][BODY] = Array(25 * 3).fill(0).map((_, i) => (i % 3 === 2 ? 1 : 10 + i));
  m.load("", frame);
  m.addPerson();
  assert.equal(m.toFrame().people[1][BODY].length, 75);
  const m2 = new PoseModel({ width: 300, height: 600 });
  m2.load("", null);
  m2.addPerson();
  assert.equal(m2.toFrame().people[0][BODY].length, 54);
  assert.equal(m2.toFrame().canvas_width, 300);
});

test("flip swaps left and right labels in place, twice is a no-op", () => {
  const m = new PoseModel();
  const frame = inputFrame();
  frame.people[0].hand_left_keypoints_2d = Array(63).fill(1);
  m.load("", frame);
  m.flipPerson(0);
  const f = m.toFrame();
  const names = LAYOUTS.openpose18;
  const src = body18();
  names.forEach((n, i) => {
    const other = n.startsWith("left_") ? "right_" + n.slice(5) : n.startsWith("right_") ? "left_" + n.slice(6) : n;
    const j = names.indexOf(other);
    assert.deepEqual(xy(f, 0, i), src.slice(3 * j, 3 * j + 3), n);
  });
  assert.equal(f.people[0].hand_left_keypoints_2d, null);
  assert.equal(f.people[0].hand_right_keypoints_2d.length, 63);
  const edit = JSON.parse(m.serialize());
  assert.deepEqual(edit.people[0].parts, { hand_left_keypoints_2d: null, hand_right_keypoints_2d: Array(21).fill([1, 1, 1]).flat() });
  m.flipPerson(0);
  assert.equal(m.serialize(), "");
});

test("mirror reflects positions about the person's centre and swaps labels", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  m.mirrorPerson(0);
  const f = m.toFrame();
  // visible x span of body18(): 100..260 (ear 17 missing) -> centre 180; nose stays put (x = 100 -> 260)
  assert.deepEqual(xy(f, 0, 0), [260, 50, 1]);
  // right shoulder (2) takes the left shoulder's (5) mirrored position: x 150 -> 210, y 150
  assert.deepEqual(xy(f, 0, 2), [210, 150, 1]);
  assert.deepEqual(xy(f, 0, 16), [0, 0, 0], "the missing left ear becomes the missing right ear");
});

test("undo/redo stacks: a new change clears redo", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  m.moveKeypoint({ person: 0, part: BODY, index: 1 }, 1, 1);
  m.moveKeypoint({ person: 0, part: BODY, index: 1 }, 2, 2);
  m.undo();
  assert.ok(m.canRedo);
  m.hideKeypoint({ person: 0, part: BODY, index: 5 });
  assert.equal(m.canRedo, false);
  assert.equal(m.undoStack.length, 2);
  assert.equal(m.undo() && m.undo(), true);
  assert.equal(m.undo(), false);
  assert.equal(m.serialize(), "");
});

test("reset to input drops every edit in one undoable step", () => {
  const m = new PoseModel();
  m.load("", inputFrame(2));
  m.deletePerson(1);
  m.addPerson();
  m.moveKeypoint({ person: 0, part: BODY, index: 0 }, 5, 5);
  m.resetToInput();
  assert.equal(m.serialize(), "");
  assert.equal(m.toFrame().people.length, 2);
  m.undo();
  assert.equal(JSON.parse(m.serialize()).people.length, 3);
});

test("serialise -> load round trip, also without the live input (the stored input is shown)", () => {
  const m = new PoseModel();
  m.load("", inputFrame(2));
  m.moveKeypoint({ person: 0, part: BODY, index: 7 }, 33, 44);
  m.hideKeypoint({ person: 1, part: BODY, index: 0 });
  m.addPerson();
  const stored = m.serialize();
  const frame = m.toFrame();
  const again = new PoseModel();
  again.load(stored, inputFrame(2));
  assert.deepEqual(again.toFrame(), frame);
  assert.equal(again.serialize(), stored);
  const reloaded = new PoseModel();
  reloaded.load(stored, null);
  assert.deepEqual(reloaded.toFrame(), frame);
});

test("a new input keeps the edits that still apply", () => {
  const m = new PoseModel();
  m.load("", inputFrame(2));
  m.moveKeypoint({ person: 1, part: BODY, index: 4 }, 400, 300);
  m.moveKeypoint({ person: 0, part: BODY, index: 4 }, 100, 100);
  const moved = inputFrame(1);
  moved.people[0][BODY][0] += 7; // the nose moved in the new input
  m.setInput(moved);
  const f = m.toFrame();
  assert.equal(f.people.length, 1, "person 1 is gone, so is its edit");
  assert.deepEqual(xy(f, 0, 4), [100, 100, 1]);
  assert.deepEqual(xy(f, 0, 0), [107, 50, 1]);
});

test("invalid stored edits are refused with a reason", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  const bad = [
    ["{nope", /not JSON/],
    ["[]", /not a humangen_pose_edit/],
    [JSON.stringify({ format: "humangen_pose_edit", version: 9, canvas_width: 10, canvas_height: 10, people: [] }), /version 9/],
    [JSON.stringify({ format: "humangen_pose_edit", version: 1, canvas_width: 99999, canvas_height: 10, people: [] }), /canvas_width/],
    [JSON.stringify({ format: "humangen_pose_edit", version: 1, canvas_width: 10, canvas_height: 10, people: [{ source: 0, keypoints: { [BODY]: { 3: [1, "x"] } } }] }), /must be \[x, y\] or null/],
    [JSON.stringify({ format: "humangen_pose_edit", version: 1, canvas_width: 10, canvas_height: 10, people: [{ source: null, person: { [BODY]: [1, 2] } }] }), /x, y, confidence/],
    ["x".repeat(LIMITS.maxChars + 1), /characters/],
    // the same refusals as utils/pose_edit.py (tests/test_pose_hostile.py)
    [JSON.stringify({ format: "humangen_pose_edit", version: 1, canvas_width: 10, canvas_height: 10, people: [{ source: 0, keypoints: { [BODY]: { 3: [1e308, 1] } } }] }), /within ±819200/],
    [JSON.stringify({ format: "humangen_pose_edit", version: 1, canvas_width: 10, canvas_height: 10, people: [{ source: 0, keypoints: [1] }] }), /keypoints must be an object/],
    [JSON.stringify({ format: "humangen_pose_edit", version: 1, canvas_width: 10, canvas_height: 10, people: [{ source: 0, parts: "ab" }] }), /parts must be an object/],
    [JSON.stringify({ format: "humangen_pose_edit", version: 1, canvas_width: 10, canvas_height: 10, people: [{ source: 0, keypoints: { [BODY]: { "1e1": [1, 1] } } }] }), /bad index/],
  ];
  for (const [value, re] of bad) {
    assert.throws(() => m.load(value, inputFrame()), (e) => e instanceof EditError && re.test(e.message), value.slice(0, 60));
  }
  assert.deepEqual(m.toFrame().people[0][BODY], body18(), "a refused edit leaves the model as it was");
});

test("shared cases: the same output as utils/pose_edit.py (tests/js/fixtures/pose_edit_cases.json)", () => {
  for (const c of CASES) {
    const { people, width, height } = applyEdit(parseEdit(c.edit), c.input, { width: c.width || 512, height: c.height || 768 });
    const frame = { people: people.filter((p) => !p.deleted).map(personToDict), canvas_width: width, canvas_height: height };
    assert.deepEqual(frame.people.map((p) => p[BODY]), c.expected.people.map((p) => p[BODY]), c.name);
    assert.deepEqual([frame.canvas_width, frame.canvas_height], [c.expected.canvas_width, c.expected.canvas_height], c.name);
  }
});

test("skeleton tables: swaps are involutions, limbs index real joints", () => {
  for (const layout of Object.keys(LAYOUTS)) {
    const perm = leftRightSwap(layout);
    perm.forEach((j, i) => assert.equal(perm[j], i, `${layout} ${i}`));
    for (const [a, b] of bodyLimbs(layout)) assert.ok(a < LAYOUTS[layout].length && b < LAYOUTS[layout].length);
  }
  assert.equal(bodyLimbs("openpose18").length, 17);
});

test("a click on a joint without moving it is no edit and no undo step", () => {
  const m = new PoseModel();
  m.load("", inputFrame());
  const edits = [];
  m.onChange(({ edited }) => edits.push(edited));
  m.beginDrag({ person: 0, part: BODY, index: 2, ghost: false });
  assert.equal(m.endDrag(), false);
  assert.equal(m.undoStack.length, 0);
  assert.ok(!edits.includes(true));
  assert.deepEqual(edits, [false], "listeners hear of the new selection");
  assert.deepEqual(m.selection, { person: 0, part: BODY, index: 2 });
});

test("at most LIMITS.maxPeople added people, as the node accepts", () => {
  const m = new PoseModel();
  m.load("", null);
  for (let i = 0; i < LIMITS.maxPeople; i++) assert.ok(m.addPerson());
  assert.equal(m.addPerson(), false);
  const edit = JSON.parse(m.serialize());
  assert.equal(edit.people.length, LIMITS.maxPeople);
  edit.people.push(edit.people[0]);
  assert.throws(() => m.load(JSON.stringify(edit), null), /adds more than 64 people/);
});
