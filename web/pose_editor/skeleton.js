// Keypoint layouts, limbs and colours of POSE_KEYPOINT (comfyui_controlnet_aux's OpenPose JSON), as the pack's
// utils/pose.py defines them. Pure data and small pure functions: no DOM, no ComfyUI.

export const BODY_KEY = "pose_keypoints_2d";
export const FACE_KEY = "face_keypoints_2d";
export const LEFT_HAND_KEY = "hand_left_keypoints_2d";
export const RIGHT_HAND_KEY = "hand_right_keypoints_2d";
/** The keypoint arrays of a person, in drawing order (face under hands under body). */
export const PART_KEYS = [FACE_KEY, LEFT_HAND_KEY, RIGHT_HAND_KEY, BODY_KEY];

export const LAYOUTS = {
  coco17: ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle"],
  openpose18: ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear"],
  body25: ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel",
    "right_big_toe", "right_small_toe", "right_heel"],
  mediapipe33: ["nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index",
    "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index"],
};

/** The body layout name for a keypoint count, or null. */
export function layoutForCount(n) {
  for (const [name, joints] of Object.entries(LAYOUTS)) if (joints.length === n) return name;
  return null;
}

// Body limbs by joint name, in ControlNet's OpenPose order (limb i is drawn in OPENPOSE_COLORS[i]); the feet
// limbs only exist in BODY_25, the shoulder/hip bars stand in for the neck in layouts without one.
const LIMB_NAMES = [
  ["neck", "right_shoulder"], ["neck", "left_shoulder"], ["right_shoulder", "right_elbow"],
  ["right_elbow", "right_wrist"], ["left_shoulder", "left_elbow"], ["left_elbow", "left_wrist"],
  ["neck", "right_hip"], ["right_hip", "right_knee"], ["right_knee", "right_ankle"], ["neck", "left_hip"],
  ["left_hip", "left_knee"], ["left_knee", "left_ankle"], ["neck", "nose"], ["nose", "right_eye"],
  ["right_eye", "right_ear"], ["nose", "left_eye"], ["left_eye", "left_ear"],
  ["left_ankle", "left_big_toe"], ["left_big_toe", "left_small_toe"], ["left_ankle", "left_heel"],
  ["right_ankle", "right_big_toe"], ["right_big_toe", "right_small_toe"], ["right_ankle", "right_heel"],
  ["left_shoulder", "right_shoulder"], ["left_hip", "right_hip"], ["left_shoulder", "left_hip"],
  ["right_shoulder", "right_hip"],
];

/** ControlNet's 18 OpenPose colours (RGB), used for limbs and joints. */
export const OPENPOSE_COLORS = [
  [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
  [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
  [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]];

/** Limbs of a body layout as [a, b, colourIndex]. Layouts with a neck skip the bars that stand in for it. */
export function bodyLimbs(layout) {
  const names = LAYOUTS[layout] || [];
  const index = new Map(names.map((n, i) => [n, i]));
  const hasNeck = index.has("neck");
  const out = [];
  LIMB_NAMES.forEach(([a, b], i) => {
    if (!index.has(a) || !index.has(b)) return;
    if (hasNeck && i >= 23) return;
    out.push([index.get(a), index.get(b), i % OPENPOSE_COLORS.length]);
  });
  return out;
}

/** Colour index of body joint `i` of `layout`: the OpenPose-18 index of the same joint name (so a wrist has the
 * same colour in every layout). */
export function jointColorIndex(layout, i) {
  const name = (LAYOUTS[layout] || [])[i];
  const j = LAYOUTS.openpose18.indexOf(name);
  return (j >= 0 ? j : i) % OPENPOSE_COLORS.length;
}

// OpenPose hand: wrist 0, then thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20.
export const HAND_EDGES = [];
for (let finger = 0; finger < 5; finger++) {
  const base = 1 + finger * 4;
  HAND_EDGES.push([0, base], [base, base + 1], [base + 1, base + 2], [base + 2, base + 3]);
}

/** The colour of hand edge i of n, as ControlNet draws hands (hue i/n, full saturation and value), RGB. */
export function handEdgeColor(i, n = HAND_EDGES.length) {
  const h = (i / n) * 6;
  const k = Math.floor(h) % 6;
  const f = h - Math.floor(h);
  const q = Math.round(255 * (1 - f));
  const t = Math.round(255 * f);
  return [[255, t, 0], [q, 255, 0], [0, 255, t], [0, q, 255], [t, 0, 255], [255, 0, q]][k];
}

/** Permutation that swaps left and right joints of a body layout (by name); other joints map to themselves. */
export function leftRightSwap(layout) {
  const names = LAYOUTS[layout];
  if (!names) return null;
  const index = new Map(names.map((n, i) => [n, i]));
  return names.map((n, i) => {
    const other = n.startsWith("left_") ? "right_" + n.slice(5) : n.startsWith("right_") ? "left_" + n.slice(6) : n;
    return index.has(other) ? index.get(other) : i;
  });
}

// The 68 (+2 pupils = 70) face landmarks mirrored left <-> right: jaw, brows, nose, eyes, lips.
function faceMirror(n) {
  const pairs = [];
  for (let i = 0; i < 8; i++) pairs.push([i, 16 - i]);
  for (let i = 0; i < 5; i++) pairs.push([17 + i, 26 - i]);
  pairs.push([31, 35], [32, 34], [36, 45], [37, 44], [38, 43], [39, 42], [40, 47], [41, 46]);
  pairs.push([48, 54], [49, 53], [50, 52], [55, 59], [56, 58], [60, 64], [61, 63], [65, 67], [68, 69]);
  const perm = Array.from({ length: n }, (_, i) => i);
  for (const [a, b] of pairs) {
    if (a < n && b < n) {
      perm[a] = b;
      perm[b] = a;
    }
  }
  return perm;
}
export { faceMirror };

// A standing person facing the viewer (OpenPose-18), in units of the canvas height around x = 0; their right
// side is on the image's left.
const DEFAULT_BODY = {
  nose: [0, 0.12], neck: [0, 0.22], right_shoulder: [-0.09, 0.22], right_elbow: [-0.12, 0.36],
  right_wrist: [-0.14, 0.49], left_shoulder: [0.09, 0.22], left_elbow: [0.12, 0.36], left_wrist: [0.14, 0.49],
  right_hip: [-0.05, 0.5], right_knee: [-0.05, 0.69], right_ankle: [-0.05, 0.88], left_hip: [0.05, 0.5],
  left_knee: [0.05, 0.69], left_ankle: [0.05, 0.88], right_eye: [-0.02, 0.105], left_eye: [0.02, 0.105],
  right_ear: [-0.04, 0.115], left_ear: [0.04, 0.115],
  // BODY_25 extras
  mid_hip: [0, 0.5], left_big_toe: [0.07, 0.93], left_small_toe: [0.09, 0.92], left_heel: [0.05, 0.9],
  right_big_toe: [-0.07, 0.93], right_small_toe: [-0.09, 0.92], right_heel: [-0.05, 0.9],
};

/** Default skeleton joint positions for `layout` on a width x height canvas, centred at x = cx (pixels):
 * an array of [x, y] or null for joints the default person lacks. */
export function defaultSkeleton(layout, width, height, cx = width / 2) {
  const names = LAYOUTS[layout] || LAYOUTS.openpose18;
  const s = Math.min(height, 2.5 * width);  // the figure fits narrow canvases too
  const top = (height - s) / 2;
  return names.map((n) => {
    let p = DEFAULT_BODY[n];
    if (!p && n.endsWith("foot_index")) p = DEFAULT_BODY[n.replace("foot_index", "big_toe")];
    if (!p && n.includes("eye")) p = DEFAULT_BODY[n.startsWith("left") ? "left_eye" : "right_eye"];
    if (!p) return null;
    return [cx + p[0] * s, top + p[1] * s];
  });
}
