// Canvas view of the pose editor: draws the pose over the background (OpenPose colours for body, hands and face),
// zoom and pan, hit-testing, and pointer dragging. Knows a PoseModel and a <canvas>; nothing of ComfyUI.

import {
  BODY_KEY, FACE_KEY, LEFT_HAND_KEY, RIGHT_HAND_KEY, OPENPOSE_COLORS, HAND_EDGES, bodyLimbs, handEdgeColor,
  jointColorIndex,
} from "./skeleton.js";

export const HIT_RADIUS = 9; // screen pixels
const HIT_ORDER = [BODY_KEY, LEFT_HAND_KEY, RIGHT_HAND_KEY, FACE_KEY]; // on a tie the body wins

/** The keypoint (or, for the selected person, hidden "ghost" keypoint) under screen point (sx, sy), or null.
 * `toScreen(x, y)` maps pose pixels to screen pixels. Pure: unit-tested without a DOM. */
export function hitTest(model, toScreen, sx, sy, radius = HIT_RADIUS) {
  let best = null;
  let bestD = radius * radius;
  model.people.forEach((person, pi) => {
    if (person.deleted) return;
    const selected = model.selection?.person === pi;
    for (const part of HIT_ORDER) {
      (person.parts[part] || []).forEach((p, index) => {
        let xy = null;
        if (p.v) xy = [p.x, p.y];
        else if (selected && part !== FACE_KEY) xy = model.restorePosition({ person: pi, part, index });
        if (!xy) return;
        const [x, y] = toScreen(xy[0], xy[1]);
        const d = (x - sx) ** 2 + (y - sy) ** 2;
        if (d < bestD) {
          bestD = d;
          best = { person: pi, part, index, ghost: !p.v };
        }
      });
    }
  });
  return best;
}

const rgb = ([r, g, b], a = 1) => `rgba(${r},${g},${b},${a})`;

export class PoseView {
  constructor(canvas, model, { onInteraction = () => {} } = {}) {
    this.canvas = canvas;
    this.model = model;
    this.onInteraction = onInteraction;
    this.background = null;
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.pointer = null; // {mode: "drag" | "pan", ...}
    this.frameRequested = false;
    this.fitted = false;
    this.unsubscribe = model.onChange(() => this.requestDraw());
    this.handlers = {
      pointerdown: (e) => this.onPointerDown(e),
      pointermove: (e) => this.onPointerMove(e),
      pointerup: (e) => this.onPointerUp(e),
      pointercancel: (e) => this.onPointerUp(e),
      wheel: (e) => this.onWheel(e),
      contextmenu: (e) => e.preventDefault(),
    };
    for (const [name, fn] of Object.entries(this.handlers)) canvas.addEventListener(name, fn, { passive: false });
  }

  destroy() {
    this.unsubscribe();
    for (const [name, fn] of Object.entries(this.handlers)) this.canvas.removeEventListener(name, fn);
  }

  setBackground(image) {
    this.background = image;
    this.requestDraw();
  }

  // -- transform ------------------------------------------------------------------------------------------------
  toScreen = (x, y) => [x * this.zoom + this.panX, y * this.zoom + this.panY];
  toPose = (sx, sy) => [(sx - this.panX) / this.zoom, (sy - this.panY) / this.zoom];

  /** Show the whole canvas, centred, with a small margin. */
  fit() {
    const { width, height } = this.cssSize();
    const m = 8;
    this.zoom = Math.max(1e-3, Math.min((width - 2 * m) / this.model.width, (height - 2 * m) / this.model.height));
    this.panX = (width - this.model.width * this.zoom) / 2;
    this.panY = (height - this.model.height * this.zoom) / 2;
    this.fitted = true;
    this.requestDraw();
  }

  zoomAt(sx, sy, factor) {
    const [x, y] = this.toPose(sx, sy);
    this.zoom = Math.min(64, Math.max(0.02, this.zoom * factor));
    this.panX = sx - x * this.zoom;
    this.panY = sy - y * this.zoom;
    this.requestDraw();
  }

  /** The canvas' layout size in CSS pixels (before any CSS transform of a host page). */
  cssSize() {
    const c = this.canvas;
    const r = c.getBoundingClientRect();
    return { width: c.offsetWidth || r.width || c.width, height: c.offsetHeight || r.height || c.height };
  }

  /** The pointer in the canvas' own CSS pixels. A host may scale the widget with a CSS transform (ComfyUI does, to
   * follow the graph's zoom): the bounding box is then scaled, so divide that scale out. */
  eventPoint(e) {
    const r = this.canvas.getBoundingClientRect();
    const { width, height } = this.cssSize();
    const kx = width ? r.width / width : 1;
    const ky = height ? r.height / height : 1;
    return [(e.clientX - r.left) / (kx || 1), (e.clientY - r.top) / (ky || 1)];
  }

  // -- pointer ------------------------------------------------------------------------------------------------------
  onPointerDown(e) {
    e.preventDefault();
    e.stopPropagation();
    this.canvas.focus?.();
    const [sx, sy] = this.eventPoint(e);
    const hit = e.button === 0 ? hitTest(this.model, this.toScreen, sx, sy) : null;
    if (hit && !hit.ghost && this.model.beginDrag(hit)) {
      // keep the grab offset: the joint moves by exactly the pointer's movement
      const p = this.model.point(hit);
      const [x, y] = this.toPose(sx, sy);
      this.pointer = { mode: "drag", id: e.pointerId, dx: p.x - x, dy: p.y - y };
    } else {
      if (e.button === 0) this.model.select(hit ? { person: hit.person, part: hit.part, index: hit.index } : null);
      this.pointer = { mode: "pan", id: e.pointerId, sx, sy, panX: this.panX, panY: this.panY };
    }
    this.canvas.setPointerCapture?.(e.pointerId);
    this.onInteraction();
    this.requestDraw();
  }

  onPointerMove(e) {
    if (!this.pointer || e.pointerId !== this.pointer.id) return;
    e.preventDefault();
    const [sx, sy] = this.eventPoint(e);
    if (this.pointer.mode === "drag") {
      const [x, y] = this.toPose(sx, sy);
      this.model.dragTo(x + this.pointer.dx, y + this.pointer.dy);
    } else {
      this.panX = this.pointer.panX + sx - this.pointer.sx;
      this.panY = this.pointer.panY + sy - this.pointer.sy;
      this.requestDraw();
    }
  }

  onPointerUp(e) {
    if (!this.pointer || e.pointerId !== this.pointer.id) return;
    if (this.pointer.mode === "drag") this.model.endDrag();
    this.pointer = null;
    this.canvas.releasePointerCapture?.(e.pointerId);
    this.requestDraw();
  }

  onWheel(e) {
    e.preventDefault();
    e.stopPropagation();
    const [sx, sy] = this.eventPoint(e);
    this.zoomAt(sx, sy, Math.pow(1.0015, -e.deltaY));
  }

  // -- drawing ------------------------------------------------------------------------------------------------------
  requestDraw() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    const run = () => {
      this.frameRequested = false;
      this.draw();
    };
    if (typeof requestAnimationFrame === "function") requestAnimationFrame(run);
    else run();
  }

  draw() {
    const { width, height } = this.cssSize();
    const dpr = globalThis.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(width * dpr));
    const h = Math.max(1, Math.round(height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    if (!this.fitted && width > 0 && height > 0) this.fit();
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#1b1b1b";
    ctx.fillRect(0, 0, width, height);
    ctx.save();
    ctx.translate(this.panX, this.panY);
    ctx.scale(this.zoom, this.zoom);
    const { width: W, height: H } = this.model;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, W, H);
    if (this.background) {
      ctx.globalAlpha = 0.6;
      ctx.drawImage(this.background, 0, 0, W, H);
      ctx.globalAlpha = 1;
    }
    ctx.strokeStyle = "#666";
    ctx.lineWidth = 1 / this.zoom;
    ctx.strokeRect(0, 0, W, H);
    this.model.people.forEach((person, pi) => {
      if (!person.deleted) this.drawPerson(ctx, person, pi);
    });
    ctx.restore();
  }

  drawPerson(ctx, person, pi) {
    const z = this.zoom;
    const sel = this.model.selection;
    const selected = sel?.person === pi;
    const face = person.parts[FACE_KEY];
    for (const p of face || []) {
      if (!p.v) continue;
      ctx.fillStyle = "#fff";
      ctx.beginPath();
      ctx.arc(p.x, p.y, 2 / z, 0, 2 * Math.PI);
      ctx.fill();
    }
    for (const part of [LEFT_HAND_KEY, RIGHT_HAND_KEY]) {
      const pts = person.parts[part];
      if (!pts) continue;
      ctx.lineWidth = 2 / z;
      HAND_EDGES.forEach(([a, b], i) => {
        if (!pts[a]?.v || !pts[b]?.v) return;
        ctx.strokeStyle = rgb(handEdgeColor(i));
        ctx.beginPath();
        ctx.moveTo(pts[a].x, pts[a].y);
        ctx.lineTo(pts[b].x, pts[b].y);
        ctx.stroke();
      });
      for (const p of pts) {
        if (!p.v) continue;
        ctx.fillStyle = "#0000ff";
        ctx.beginPath();
        ctx.arc(p.x, p.y, 2.5 / z, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    const body = person.parts[BODY_KEY];
    const layout = this.model.bodyLayout(person);
    if (body) {
      ctx.lineCap = "round";
      ctx.lineWidth = 5 / z;
      for (const [a, b, c] of layout ? bodyLimbs(layout) : []) {
        if (!body[a]?.v || !body[b]?.v) continue;
        ctx.strokeStyle = rgb(OPENPOSE_COLORS[c], 0.6);
        ctx.beginPath();
        ctx.moveTo(body[a].x, body[a].y);
        ctx.lineTo(body[b].x, body[b].y);
        ctx.stroke();
      }
      body.forEach((p, i) => {
        if (!p.v) return;
        ctx.fillStyle = rgb(OPENPOSE_COLORS[jointColorIndex(layout, i)]);
        ctx.beginPath();
        ctx.arc(p.x, p.y, 4.5 / z, 0, 2 * Math.PI);
        ctx.fill();
      });
    }
    if (selected) {
      // the selected person's hidden body/hand points as dashed ghosts (click one, then R to restore it)
      ctx.setLineDash([3 / z, 3 / z]);
      ctx.lineWidth = 1.5 / z;
      ctx.strokeStyle = "#ddd";
      for (const part of [BODY_KEY, LEFT_HAND_KEY, RIGHT_HAND_KEY]) {
        (person.parts[part] || []).forEach((p, index) => {
          if (p.v) return;
          const [x, y] = this.model.restorePosition({ person: pi, part, index });
          ctx.beginPath();
          ctx.arc(x, y, 5 / z, 0, 2 * Math.PI);
          ctx.stroke();
        });
      }
      ctx.setLineDash([]);
      const vis = Object.values(person.parts).flatMap((pts) => (pts || []).filter((p) => p.v));
      if (vis.length) {
        const xs = vis.map((p) => p.x);
        const ys = vis.map((p) => p.y);
        const m = 10 / z;
        ctx.strokeStyle = "rgba(255,255,255,0.5)";
        ctx.lineWidth = 1 / z;
        ctx.strokeRect(Math.min(...xs) - m, Math.min(...ys) - m, Math.max(...xs) - Math.min(...xs) + 2 * m,
          Math.max(...ys) - Math.min(...ys) + 2 * m);
      }
      if (sel.part) {
        const p = person.parts[sel.part]?.[sel.index];
        const xy = p && (p.v ? [p.x, p.y] : this.model.restorePosition(sel));
        if (xy) {
          ctx.strokeStyle = "#fff";
          ctx.lineWidth = 2 / z;
          ctx.beginPath();
          ctx.arc(xy[0], xy[1], 8 / z, 0, 2 * Math.PI);
          ctx.stroke();
        }
      }
    }
  }
}
