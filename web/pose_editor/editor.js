// The pose editor component: toolbar, canvas view, status and help line, keyboard shortcuts. Mount it on any
// element; it knows nothing of ComfyUI (web/humangen_pose_editor.js is the glue).
//
//   const editor = mountPoseEditor(element, {onChange: (value) => ..., onReset: () => ...});
//   editor.setValue(storedEditJson); editor.setInput(frame, {width, height}); editor.setBackground(url);
//   editor.getValue()  // the stored edit ("" = none)

import { PoseModel, EditError } from "./pose_state.js";
import { PoseView } from "./view.js";

export const HELP = "drag a joint · wheel zoom · drag empty space pan · 0 fit · Del hide point · " +
  "R restore (click a dashed ghost first) · N add person · Shift+Del delete person · Tab next person · " +
  "F flip L/R · M mirror · arrows nudge · Ctrl+Z undo · Ctrl+Y / Ctrl+Shift+Z redo";

const STYLE = `
.hg-pe{display:flex;flex-direction:column;gap:4px;width:100%;height:100%;box-sizing:border-box;outline:none;
  font:12px sans-serif;color:#ddd;background:#222;border-radius:4px;padding:4px;min-height:200px}
.hg-pe:focus-within{box-shadow:0 0 0 1px #4a90d9}
.hg-pe-bar{display:flex;flex-wrap:wrap;gap:3px}
.hg-pe-bar button{font:11px sans-serif;padding:2px 6px;background:#333;color:#ddd;border:1px solid #555;
  border-radius:3px;cursor:pointer}
.hg-pe-bar button:disabled{opacity:.4;cursor:default}
.hg-pe-canvas{flex:1 1 auto;min-height:120px;width:100%;display:block;touch-action:none;cursor:crosshair}
.hg-pe-status{min-height:14px;color:#9cf;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.hg-pe-status.hg-pe-error{color:#f88}
.hg-pe-help{color:#888;font-size:10px;line-height:1.3}
`;

function injectStyle(doc) {
  if (doc.getElementById("hg-pose-editor-style")) return;
  const el = doc.createElement("style");
  el.id = "hg-pose-editor-style";
  el.textContent = STYLE;
  doc.head.appendChild(el);
}

/** Build the editor inside `root`. Options: onChange(value) after every edit, fallback {width, height} canvas. */
export function mountPoseEditor(root, { onChange = () => {}, fallback = { width: 512, height: 768 } } = {}) {
  const doc = root.ownerDocument;
  injectStyle(doc);
  const el = doc.createElement("div");
  el.className = "hg-pe";
  el.tabIndex = 0;
  const bar = doc.createElement("div");
  bar.className = "hg-pe-bar";
  const canvas = doc.createElement("canvas");
  canvas.className = "hg-pe-canvas";
  const status = doc.createElement("div");
  status.className = "hg-pe-status";
  const help = doc.createElement("div");
  help.className = "hg-pe-help";
  help.textContent = HELP;
  const fileInput = doc.createElement("input");
  fileInput.type = "file";
  fileInput.accept = "image/*";
  fileInput.style.display = "none";
  el.append(bar, canvas, status, help, fileInput);
  root.appendChild(el);

  const model = new PoseModel(fallback);
  model.load("", null, fallback);
  const view = new PoseView(canvas, model, { onInteraction: () => el.focus({ preventScroll: true }) });
  let invalidValue = null; // a stored edit that could not be read: kept (so the node reports it) until reset
  let report = "";

  const selectedPerson = () => model.selection?.person;
  const selectedPoint = () => (model.selection?.part ? model.point(model.selection) : null);
  const actions = {
    undo: () => model.undo(),
    redo: () => model.redo(),
    addPerson: () => model.addPerson(),
    deletePerson: () => model.deletePerson(),
    hidePoint: () => model.hideKeypoint(),
    restorePoint: () => model.restoreKeypoint(),
    flip: () => model.flipPerson(),
    mirror: () => model.mirrorPerson(),
    nextPerson: () => {
      const live = model.people.map((p, i) => (p.deleted ? -1 : i)).filter((i) => i >= 0);
      if (!live.length) return;
      const at = live.indexOf(selectedPerson());
      model.select({ person: live[(at + 1) % live.length] });
    },
    fit: () => view.fit(),
    zoomIn: () => { const { width, height } = view.cssSize(); view.zoomAt(width / 2, height / 2, 1.25); },
    zoomOut: () => { const { width, height } = view.cssSize(); view.zoomAt(width / 2, height / 2, 0.8); },
    reset: () => {
      invalidValue = null;
      model.resetToInput();
      changed();
    },
    loadBackground: () => fileInput.click(),
    nudge: (dx, dy) => {
      const p = selectedPoint();
      if (p?.v) model.moveKeypoint(model.selection, p.x + dx, p.y + dy);
    },
    deselect: () => model.select(null),
  };

  const buttons = [
    ["Undo", "undo", "Ctrl+Z"], ["Redo", "redo", "Ctrl+Y"], ["Add person", "addPerson", "N"],
    ["Delete person", "deletePerson", "Shift+Del"], ["Hide point", "hidePoint", "Del"],
    ["Restore point", "restorePoint", "R"], ["Flip L/R", "flip", "F: swap left/right labels"],
    ["Mirror", "mirror", "M: mirror the person horizontally"], ["Fit", "fit", "0"],
    ["Background…", "loadBackground", "show an image of yours under the pose (not saved)"],
    ["Reset to input", "reset", "drop every edit (undoable)"],
  ];
  const buttonEls = {};
  for (const [label, name, title] of buttons) {
    const b = doc.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.title = title;
    b.dataset.action = name;
    b.addEventListener("click", (e) => {
      e.stopPropagation();
      actions[name]();
      el.focus({ preventScroll: true });
    });
    bar.appendChild(b);
    buttonEls[name] = b;
  }

  function refreshButtons() {
    const person = model.people[selectedPerson()];
    const p = selectedPoint();
    buttonEls.undo.disabled = !model.canUndo;
    buttonEls.redo.disabled = !model.canRedo;
    for (const n of ["deletePerson", "flip", "mirror"]) buttonEls[n].disabled = !person || person.deleted;
    buttonEls.hidePoint.disabled = !p?.v;
    buttonEls.restorePoint.disabled = !p || p.v;
  }

  function showStatus() {
    status.classList.toggle("hg-pe-error", invalidValue !== null);
    if (invalidValue !== null) return;
    const n = model.people.filter((p) => !p.deleted).length;
    const sel = model.selection;
    let where = "";
    if (sel?.part) where = ` · selected: person ${sel.person + 1}, ${sel.part.replace("_keypoints_2d", "")} point ${sel.index}` +
      (model.point(sel)?.v ? "" : " (hidden)");
    else if (sel) where = ` · selected: person ${sel.person + 1}`;
    status.textContent = `${n} ${n === 1 ? "person" : "people"} · ${model.width}×${model.height}${where}` + (report ? ` · ${report}` : "");
    status.title = report;
  }

  function changed() {
    onChange(api.getValue());
  }

  model.onChange(({ edited }) => {
    refreshButtons();
    showStatus();
    if (edited) {
      invalidValue = null;
      changed();
    }
  });

  fileInput.addEventListener("change", () => {
    const file = fileInput.files?.[0];
    if (file) api.setBackground(URL.createObjectURL(file));
    fileInput.value = "";
  });

  el.addEventListener("keydown", (e) => {
    if (e.target !== el && e.target !== canvas) return; // typing in another field
    const ctrl = e.ctrlKey || e.metaKey;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const step = e.shiftKey ? 10 : 1;
    const map = {
      "z": ctrl ? (e.shiftKey ? actions.redo : actions.undo) : null,
      "y": ctrl ? actions.redo : null,
      "Delete": e.shiftKey ? actions.deletePerson : actions.hidePoint,
      "Backspace": e.shiftKey ? actions.deletePerson : actions.hidePoint,
      "r": ctrl ? null : actions.restorePoint, "Insert": actions.restorePoint,
      "n": ctrl ? null : actions.addPerson, "f": ctrl ? null : actions.flip, "m": ctrl ? null : actions.mirror,
      "Tab": actions.nextPerson, "0": actions.fit, "+": actions.zoomIn, "=": actions.zoomIn, "-": actions.zoomOut,
      "Escape": actions.deselect,
      "ArrowLeft": () => actions.nudge(-step, 0), "ArrowRight": () => actions.nudge(step, 0),
      "ArrowUp": () => actions.nudge(0, -step), "ArrowDown": () => actions.nudge(0, step),
    };
    const fn = map[key];
    if (!fn) return;
    e.preventDefault();
    e.stopPropagation(); // keep Delete, Ctrl+Z, ... away from the host page (ComfyUI would delete the node)
    fn();
  });
  // the wheel zooms the pose, never the page or the host's graph canvas
  el.addEventListener("wheel", (e) => e.stopPropagation(), { passive: true });

  const api = {
    element: el,
    model,
    view,
    actions,
    /** The stored edit ("" = none). An unreadable stored edit is returned unchanged until "Reset to input". */
    getValue: () => (invalidValue !== null ? invalidValue : model.serialize()),
    /** Load a stored edit (keeps the current input pose). */
    setValue(value) {
      try {
        model.load(value || "", model.input, fallback);
        invalidValue = null;
      } catch (e) {
        if (!(e instanceof EditError)) throw e;
        invalidValue = String(value);
        status.textContent = `The stored edit cannot be read: ${e.message}. Press 'Reset to input' to start over.`;
      }
      view.fitted = false;
      refreshButtons();
      showStatus();
      view.requestDraw();
    },
    /** A new input pose (frame or null) after a run; the stored edit is re-applied to it. */
    setInput(frame, canvas = null) {
      if (canvas) Object.assign(fallback, canvas);
      const resized = !frame || !model.input || frame.canvas_width !== model.width || frame.canvas_height !== model.height;
      if (invalidValue !== null) {
        model.input = frame;
        return;
      }
      model.setInput(frame, fallback);
      if (resized) view.fitted = false;
      view.requestDraw();
    },
    /** Show an image (URL, or null for none) under the pose, stretched to the canvas. */
    setBackground(url) {
      if (!url) {
        view.setBackground(null);
        return Promise.resolve();
      }
      return new Promise((resolve) => {
        const img = new Image();
        img.onload = () => {
          view.setBackground(img);
          resolve(true);
        };
        img.onerror = () => resolve(false);
        img.src = url;
      });
    },
    /** The node's message after a run (which edits were kept, ...). */
    setReport(text) {
      report = text || "";
      showStatus();
    },
    destroy() {
      view.destroy();
      el.remove();
    },
  };
  refreshButtons();
  showStatus();
  return api;
}

