// Pose state of the HumanGen pose editor: the people being edited, the operations on them (drag, hide/restore a
// keypoint, add/delete/flip/mirror a person, undo/redo) and the stored edit they serialise to. No DOM, no ComfyUI:
// unit-tested with `node --test tests/js/`.
//
// The stored edit (the node's `pose_edit` widget value, a JSON string; "" = no edit) is applied to the input pose
// per person and keypoint, the same way as utils/pose_edit.py does it for the node:
//
//   {"format": "humangen_pose_edit", "version": 1,
//    "canvas_width": W, "canvas_height": H,        // the canvas the coordinates below are in
//    "input": {frame} | null,                      // the input frame the edit was made on (shown before a run)
//    "people": [
//      {"source": 0, "deleted": true},                                         // an input person removed
//      {"source": 1, "keypoints": {"pose_keypoints_2d": {"4": [x, y], "7": null}}},  // moved / hidden points
//      {"source": 1, "parts": {"hand_left_keypoints_2d": [x, y, c, ...] | null}},     // a whole part replaced
//      {"source": null, "person": {"pose_keypoints_2d": [...], ...}}]}        // a person added in the editor
//
// Input people the edit does not name pass through unchanged; added people come after the input people.

import {
  BODY_KEY, FACE_KEY, LEFT_HAND_KEY, RIGHT_HAND_KEY, PART_KEYS, layoutForCount, leftRightSwap, faceMirror,
  defaultSkeleton,
} from "./skeleton.js";

export const EDIT_FORMAT = "humangen_pose_edit";
export const EDIT_VERSION = 1;
/** Bounds shared with utils/pose_edit.py. */
export const LIMITS = { maxChars: 1_000_000, maxPeople: 64, maxPoints: 200, maxCanvas: 8192, maxCoordinate: 819_200 };
const HISTORY_LIMIT = 200;
const EPS = 1e-3;

export class EditError extends Error {}

const round2 = (v) => Math.round(v * 100) / 100;
const clone = (v) => (v == null ? v : JSON.parse(JSON.stringify(v)));

// ---- conversion between a POSE_KEYPOINT person and the editor's person -------------------------------------------
// Editor person: {source, deleted, extra, parts: {key: [{x, y, v}] | null}}; a hidden point keeps its last position
// (x, y) so that "restore" brings it back there; a point absent in the input has x = y = null.

function pointsFromFlat(flat) {
  if (!Array.isArray(flat) || flat.length === 0) return null;
  const pts = [];
  for (let i = 0; i + 2 < flat.length; i += 3) {
    const [x, y, c] = [Number(flat[i]), Number(flat[i + 1]), Number(flat[i + 2])];
    pts.push(c > 0 ? { x, y, v: true } : { x: null, y: null, v: false });
  }
  return pts;
}

function flatFromPoints(pts) {
  if (!pts) return null;
  const out = [];
  for (const p of pts) out.push(...(p.v ? [round2(p.x), round2(p.y), 1.0] : [0, 0, 0]));
  return out;
}

export function personFromDict(dict, source = null) {
  const parts = {};
  for (const key of PART_KEYS) parts[key] = pointsFromFlat(dict?.[key]);
  const extra = {};
  for (const [k, v] of Object.entries(dict || {})) if (!PART_KEYS.includes(k)) extra[k] = clone(v);
  return { source, deleted: false, extra, parts };
}

export function personToDict(person) {
  const out = {};
  for (const key of [BODY_KEY, FACE_KEY, LEFT_HAND_KEY, RIGHT_HAND_KEY]) out[key] = flatFromPoints(person.parts[key]);
  return Object.assign(out, clone(person.extra));
}

function scalePerson(person, fx, fy) {
  for (const key of PART_KEYS) {
    for (const p of person.parts[key] || []) {
      if (p.x != null) {
        p.x *= fx;
        p.y *= fy;
      }
    }
  }
}

// ---- the stored edit: parse, validate, apply -----------------------------------------------------------------------
// a number within ±maxCoordinate (100 canvases): hand-written edits may go far off the canvas, not to overflow
function isNum(v) {
  return typeof v === "number" && Number.isFinite(v) && Math.abs(v) <= LIMITS.maxCoordinate;
}

/** Parse and check a stored edit (string, object or empty); returns the edit object or null for "no edit".
 * Throws EditError with a message that says what is wrong. */
export function parseEdit(value) {
  if (value == null || value === "") return null;
  let edit = value;
  if (typeof value === "string") {
    if (value.length > LIMITS.maxChars) throw new EditError(`the stored edit is ${value.length} characters; at most ${LIMITS.maxChars}`);
    try {
      edit = JSON.parse(value);
    } catch (e) {
      throw new EditError(`the stored edit is not JSON (${e.message})`);
    }
  }
  if (typeof edit !== "object" || Array.isArray(edit) || edit.format !== EDIT_FORMAT) throw new EditError(`the stored edit is not a ${EDIT_FORMAT} object`);
  if (edit.version !== EDIT_VERSION) throw new EditError(`stored edit version ${edit.version} is not supported (this editor writes ${EDIT_VERSION})`);
  for (const k of ["canvas_width", "canvas_height"]) {
    if (!Number.isInteger(edit[k]) || edit[k] < 1 || edit[k] > LIMITS.maxCanvas) throw new EditError(`${k} must be an integer in 1..${LIMITS.maxCanvas}`);
  }
  if (!Array.isArray(edit.people) || edit.people.length > LIMITS.maxPeople * 2) throw new EditError(`people must be a list of at most ${LIMITS.maxPeople * 2} entries`);
  if (edit.people.filter((e) => e && e.source === null).length > LIMITS.maxPeople) throw new EditError(`the edit adds more than ${LIMITS.maxPeople} people`);
  for (const [i, e] of edit.people.entries()) {
    if (typeof e !== "object" || e === null) throw new EditError(`people[${i}] is not an object`);
    if (e.source === null) {
      if (typeof e.person !== "object" || e.person === null) throw new EditError(`people[${i}] (an added person) has no person`);
      for (const key of PART_KEYS) checkFlat(e.person[key], `people[${i}].person.${key}`);
    } else {
      if (!Number.isInteger(e.source) || e.source < 0) throw new EditError(`people[${i}].source must be an input person index or null`);
      for (const field of ["keypoints", "parts"]) {
        if (e[field] && (typeof e[field] !== "object" || Array.isArray(e[field]))) throw new EditError(`people[${i}].${field} must be an object keyed by part`);
      }
      for (const [key, points] of Object.entries(e.keypoints || {})) {
        if (!PART_KEYS.includes(key) || typeof points !== "object" || points === null || Array.isArray(points)) throw new EditError(`people[${i}].keypoints has unknown part ${key}`);
        for (const [k, xy] of Object.entries(points)) {
          const idx = /^[0-9]{1,9}$/.test(k) ? Number(k) : NaN;
          if (!Number.isInteger(idx) || idx < 0 || idx >= LIMITS.maxPoints) throw new EditError(`people[${i}].keypoints.${key}: bad index ${k}`);
          if (xy !== null && !(Array.isArray(xy) && xy.length === 2 && isNum(xy[0]) && isNum(xy[1]))) throw new EditError(`people[${i}].keypoints.${key}.${k} must be [x, y] or null (numbers within ±${LIMITS.maxCoordinate})`);
        }
      }
      for (const [key, flat] of Object.entries(e.parts || {})) {
        if (!PART_KEYS.includes(key)) throw new EditError(`people[${i}].parts has unknown part ${key}`);
        checkFlat(flat, `people[${i}].parts.${key}`);
      }
    }
  }
  return edit;
}

function checkFlat(flat, where) {
  if (flat == null) return;
  if (!Array.isArray(flat) || flat.length % 3 !== 0 || flat.length > 3 * LIMITS.maxPoints || !flat.every(isNum)) {
    throw new EditError(`${where} must be a list of x, y, confidence numbers (at most ${LIMITS.maxPoints} points, within ±${LIMITS.maxCoordinate})`);
  }
}

/** Editor people from a stored edit applied to an input frame (either may be null). Coordinates of the edit are
 * rescaled when its canvas differs from the input's. Returns {people, width, height}. */
export function applyEdit(edit, input, fallback = { width: 512, height: 768 }) {
  const width = input ? input.canvas_width : edit ? edit.canvas_width : fallback.width;
  const height = input ? input.canvas_height : edit ? edit.canvas_height : fallback.height;
  const people = (input?.people || []).map((d, i) => personFromDict(d, i));
  if (!edit) return { people, width, height };
  const fx = width / edit.canvas_width;
  const fy = height / edit.canvas_height;
  const added = [];
  for (const e of edit.people) {
    if (e.source === null) {
      const p = personFromDict(e.person, null);
      scalePerson(p, fx, fy);
      added.push(p);
      continue;
    }
    const p = people[e.source];
    if (!p) continue; // that input person is gone: the edit no longer applies
    if (e.deleted) p.deleted = true;
    for (const [key, flat] of Object.entries(e.parts || {})) {
      p.parts[key] = pointsFromFlat(flat);
      for (const q of p.parts[key] || []) if (q.x != null) Object.assign(q, { x: q.x * fx, y: q.y * fy });
    }
    for (const [key, points] of Object.entries(e.keypoints || {})) {
      const pts = p.parts[key];
      if (!pts) continue;
      for (const [k, xy] of Object.entries(points)) {
        const q = pts[Number(k)];
        if (!q) continue;
        if (xy === null) q.v = false;
        else Object.assign(q, { x: xy[0] * fx, y: xy[1] * fy, v: true });
      }
    }
  }
  return { people: people.concat(added), width, height };
}

function diffPerson(person, inputPerson) {
  const entry = { source: person.source };
  if (person.deleted) return Object.assign(entry, { deleted: true });
  const keypoints = {};
  const parts = {};
  for (const key of PART_KEYS) {
    const a = person.parts[key];
    const b = inputPerson.parts[key];
    if (!a && !b) continue;
    if (!a || !b || a.length !== b.length) {
      parts[key] = flatFromPoints(a);
      continue;
    }
    const changed = {};
    a.forEach((p, k) => {
      const q = b[k];
      if (p.v !== q.v || (p.v && (Math.abs(p.x - q.x) > EPS || Math.abs(p.y - q.y) > EPS))) {
        changed[k] = p.v ? [round2(p.x), round2(p.y)] : null;
      }
    });
    if (Object.keys(changed).length) keypoints[key] = changed;
  }
  if (Object.keys(keypoints).length) entry.keypoints = keypoints;
  if (Object.keys(parts).length) entry.parts = parts;
  return entry.keypoints || entry.parts ? entry : null;
}

// ---- the model --------------------------------------------------------------------------------------------------
export class PoseModel {
  constructor({ width = 512, height = 768 } = {}) {
    this.fallback = { width, height };
    this.input = null;
    this.width = width;
    this.height = height;
    this.people = [];
    this.selection = null; // {person, part, index} or {person} (a whole person)
    this.undoStack = [];
    this.redoStack = [];
    this.listeners = new Set();
    this.drag = null;
    this.addedCount = 0;
  }

  /** Listen to changes: cb({edited}) where edited = the stored edit changed (not only the selection). */
  onChange(cb) {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  emit(edited) {
    for (const cb of this.listeners) cb({ edited });
  }

  /** Load a stored edit over an input frame (the stored edit's own input is used when `input` is null). Clears
   * the undo history. Throws EditError for an invalid edit (the model is left unchanged). */
  load(editValue, input = null, fallback = null) {
    const edit = parseEdit(editValue);
    if (fallback) this.fallback = { ...fallback };
    this.input = clone(input || edit?.input || null);
    const { people, width, height } = applyEdit(edit, this.input, this.fallback);
    Object.assign(this, { people, width, height, selection: null, undoStack: [], redoStack: [], drag: null });
    this.addedCount = people.filter((p) => p.source === null).length;
    this.emit(false);
  }

  /** A new input pose (after a run): the current edit is re-applied to it. */
  setInput(frame, fallback = null) {
    this.load(this.serialize(), frame, fallback);
  }

  /** The stored edit as an object, or null when nothing is edited. */
  toEdit() {
    const inputPeople = (this.input?.people || []).map((d, i) => personFromDict(d, i));
    const entries = [];
    for (const p of this.people) {
      if (p.source !== null && inputPeople[p.source]) {
        const e = diffPerson(p, inputPeople[p.source]);
        if (e) entries.push(e);
      }
    }
    for (const p of this.people) {
      if (p.source === null && !p.deleted) entries.push({ source: null, person: personToDict(p) });
    }
    if (!entries.length) return null;
    return {
      format: EDIT_FORMAT, version: EDIT_VERSION, canvas_width: this.width, canvas_height: this.height,
      input: clone(this.input), people: entries,
    };
  }

  /** The stored edit as the widget's string ("" when nothing is edited). */
  serialize() {
    const edit = this.toEdit();
    return edit ? JSON.stringify(edit) : "";
  }

  /** The edited pose as one POSE_KEYPOINT frame (what the node outputs, before any rescale). */
  toFrame() {
    const people = this.people.filter((p) => !p.deleted).map(personToDict);
    return { people, canvas_width: this.width, canvas_height: this.height };
  }

  // -- history ---------------------------------------------------------------------------------------------------
  snapshot() {
    return JSON.stringify({ people: this.people, selection: this.selection, addedCount: this.addedCount });
  }

  restoreSnapshot(s) {
    const v = JSON.parse(s);
    this.people = v.people;
    this.selection = v.selection;
    this.addedCount = v.addedCount;
  }

  /** Run `fn` as one undoable step. */
  change(fn) {
    const before = this.snapshot();
    const result = fn();
    if (result === false || this.snapshot() === before) return false;
    this.undoStack.push(before);
    if (this.undoStack.length > HISTORY_LIMIT) this.undoStack.shift();
    this.redoStack = [];
    this.emit(true);
    return true;
  }

  get canUndo() { return this.undoStack.length > 0; }
  get canRedo() { return this.redoStack.length > 0; }

  undo() {
    if (!this.undoStack.length) return false;
    this.redoStack.push(this.snapshot());
    this.restoreSnapshot(this.undoStack.pop());
    this.emit(true);
    return true;
  }

  redo() {
    if (!this.redoStack.length) return false;
    this.undoStack.push(this.snapshot());
    this.restoreSnapshot(this.redoStack.pop());
    this.emit(true);
    return true;
  }

  // -- queries -----------------------------------------------------------------------------------------------------
  point(sel) {
    return sel && sel.part ? this.people[sel.person]?.parts[sel.part]?.[sel.index] ?? null : null;
  }

  bodyLayout(person) {
    const pts = person.parts[BODY_KEY];
    return pts ? layoutForCount(pts.length) : null;
  }

  /** Where a hidden point would come back: its last position, else a guess from the person's visible points. */
  restorePosition(sel) {
    const p = this.point(sel);
    if (!p) return null;
    if (p.x != null) return [p.x, p.y];
    const person = this.people[sel.person];
    if (sel.part === BODY_KEY) {
      const layout = this.bodyLayout(person);
      const def = defaultSkeleton(layout, this.width, this.height);
      const pts = person.parts[BODY_KEY];
      const pairs = pts.map((q, i) => [q, def[i]]).filter(([q, d]) => q.v && d);
      if (def[sel.index] && pairs.length >= 2) {
        // least-squares scale + shift of the default skeleton onto the visible joints
        const mean = (arr) => arr.reduce((s, v) => [s[0] + v[0] / arr.length, s[1] + v[1] / arr.length], [0, 0]);
        const pm = mean(pairs.map(([q]) => [q.x, q.y]));
        const dm = mean(pairs.map(([, d]) => d));
        let num = 0;
        let den = 0;
        for (const [q, d] of pairs) {
          num += (d[0] - dm[0]) * (q.x - pm[0]) + (d[1] - dm[1]) * (q.y - pm[1]);
          den += (d[0] - dm[0]) ** 2 + (d[1] - dm[1]) ** 2;
        }
        const s = den > 0 ? num / den : 1;
        return this.clamp(pm[0] + s * (def[sel.index][0] - dm[0]), pm[1] + s * (def[sel.index][1] - dm[1]));
      }
      if (def[sel.index]) return def[sel.index];
    }
    const vis = (person.parts[sel.part] || []).filter((q) => q.v);
    const all = vis.length ? vis : PART_KEYS.flatMap((k) => (person.parts[k] || []).filter((q) => q.v));
    if (!all.length) return [this.width / 2, this.height / 2];
    return [all.reduce((s, q) => s + q.x, 0) / all.length, all.reduce((s, q) => s + q.y, 0) / all.length];
  }

  clamp(x, y) {
    return [Math.min(Math.max(x, 0), this.width), Math.min(Math.max(y, 0), this.height)];
  }

  // -- operations (each one undoable step) ---------------------------------------------------------------------------
  select(sel) {
    this.selection = sel;
    this.emit(false);
  }

  moveKeypoint(sel, x, y) {
    return this.change(() => {
      const p = this.point(sel);
      if (!p || !p.v) return false;
      [p.x, p.y] = this.clamp(x, y);
    });
  }

  /** Dragging: one undo step for the whole drag. */
  beginDrag(sel) {
    const p = this.point(sel);
    if (!p || !p.v) return false;
    this.selection = { person: sel.person, part: sel.part, index: sel.index };
    this.drag = { sel: this.selection, before: this.snapshot() };
    this.emit(false); // the selection changed
    return true;
  }

  dragTo(x, y) {
    if (!this.drag) return;
    const p = this.point(this.drag.sel);
    [p.x, p.y] = this.clamp(x, y);
    this.emit(false);
  }

  endDrag() {
    if (!this.drag) return false;
    const { before } = this.drag;
    this.drag = null;
    if (this.snapshot() === before) return false;
    this.undoStack.push(before);
    this.redoStack = [];
    this.emit(true);
    return true;
  }

  hideKeypoint(sel = this.selection) {
    return this.change(() => {
      const p = this.point(sel);
      if (!p || !p.v) return false;
      p.v = false;
    });
  }

  restoreKeypoint(sel = this.selection) {
    return this.change(() => {
      const p = this.point(sel);
      if (!p || p.v) return false;
      const [x, y] = this.restorePosition(sel);
      Object.assign(p, { x, y, v: true });
    });
  }

  /** Add a default standing person (the layout of the people already there, else OpenPose-18); at most
   * LIMITS.maxPeople added people, as the node accepts. */
  addPerson() {
    return this.change(() => {
      if (this.people.filter((p) => p.source === null && !p.deleted).length >= LIMITS.maxPeople) return false;
      const existing = this.people.find((p) => !p.deleted && p.parts[BODY_KEY]);
      const layout = (existing && this.bodyLayout(existing)) || "openpose18";
      const shift = ((this.addedCount % 5) - 2) * 0.15 * this.width;
      const def = defaultSkeleton(layout, this.width, this.height, this.width / 2 + shift);
      const flat = def.flatMap((xy) => (xy ? [...this.clamp(xy[0], xy[1]), 1] : [0, 0, 0]));
      this.people.push(personFromDict({ [BODY_KEY]: flat }, null));
      this.addedCount += 1;
      this.selection = { person: this.people.length - 1 };
    });
  }

  deletePerson(index = this.selection?.person) {
    return this.change(() => {
      const p = this.people[index];
      if (!p || p.deleted) return false;
      p.deleted = true;
      this.selection = null;
    });
  }

  /** Swap the person's left and right labels (body joints and hands), positions unchanged: fixes a detector that
   * took a person seen from behind for one seen from the front. */
  flipPerson(index = this.selection?.person) {
    return this.change(() => {
      const p = this.people[index];
      if (!p || p.deleted) return false;
      swapLabels(p, this.bodyLayout(p));
    });
  }

  /** Mirror the person horizontally about the centre of their visible points (left/right labels follow). */
  mirrorPerson(index = this.selection?.person) {
    return this.change(() => {
      const p = this.people[index];
      if (!p || p.deleted) return false;
      const xs = PART_KEYS.flatMap((k) => (p.parts[k] || []).filter((q) => q.v).map((q) => q.x));
      if (!xs.length) return false;
      const cx = (Math.min(...xs) + Math.max(...xs)) / 2;
      for (const k of PART_KEYS) for (const q of p.parts[k] || []) if (q.x != null) q.x = this.clamp(2 * cx - q.x, 0)[0];
      swapLabels(p, this.bodyLayout(p));
      if (p.parts[FACE_KEY]) {
        const perm = faceMirror(p.parts[FACE_KEY].length);
        const old = p.parts[FACE_KEY];
        p.parts[FACE_KEY] = perm.map((j) => old[j]);
      }
    });
  }

  /** Back to the input pose (all edits dropped), as one undoable step. */
  resetToInput() {
    return this.change(() => {
      this.people = (this.input?.people || []).map((d, i) => personFromDict(d, i));
      this.selection = null;
      this.addedCount = 0;
    });
  }
}

function swapLabels(person, layout) {
  const perm = layout ? leftRightSwap(layout) : null;
  if (perm && person.parts[BODY_KEY]) {
    const old = person.parts[BODY_KEY];
    person.parts[BODY_KEY] = perm.map((j) => old[j]);
  }
  [person.parts[LEFT_HAND_KEY], person.parts[RIGHT_HAND_KEY]] = [person.parts[RIGHT_HAND_KEY], person.parts[LEFT_HAND_KEY]];
}
