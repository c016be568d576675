// ComfyUI glue for HumanGenPoseEditor: puts the pose editor component (./pose_editor/editor.js) on the node as a DOM
// widget. The stored edit lives in the node's `pose_edit` STRING widget (hidden here), so saving the workflow, the
// API export and the headless runner all carry it; the canvas widget itself is never serialised.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { mountPoseEditor } from "./pose_editor/editor.js";

const NODE = "HumanGenPoseEditor";
const EDIT_WIDGET = "pose_edit";
const MIN_SIZE = [560, 640];

function hideWidget(widget) {
  widget.hidden = true;
  widget.type = "hidden";
  widget.computeSize = () => [0, -4];
  widget.options ??= {};
  widget.options.hidden = true; // frontends that read the option (Vue node rendering)
}

function viewUrl(entry) {
  const q = new URLSearchParams({ filename: entry.filename, subfolder: entry.subfolder || "", type: entry.type || "temp" });
  return api.apiURL(`/view?${q}&rand=${Math.random()}`);
}

function setUp(node) {
  const editWidget = node.widgets?.find((w) => w.name === EDIT_WIDGET);
  if (!editWidget) return;
  hideWidget(editWidget);
  const container = document.createElement("div");
  container.style.width = "100%";
  container.style.height = "100%";
  const editor = mountPoseEditor(container, {
    onChange: (value) => {
      editWidget.value = value;
      node.setDirtyCanvas?.(true, true);
    },
  });
  const widget = node.addDOMWidget("pose_canvas", "humangen_pose_editor", container, {
    serialize: false, // the edit travels in pose_edit, not here
    hideOnZoom: false,
    getValue: () => undefined,
    setValue: () => {},
    getMinHeight: () => 420,
  });
  widget.serialize = false;
  node.humangenPoseEditor = editor;
  editor.setValue(editWidget.value || "");
  node.setSize([Math.max(node.size[0], MIN_SIZE[0]), Math.max(node.size[1], MIN_SIZE[1])]);
}

app.registerExtension({
  name: "HumanGen.PoseEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      setUp(this);
      return r;
    };

    // a loaded workflow sets pose_edit after the node was created: show that edit
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      const value = this.widgets?.find((w) => w.name === EDIT_WIDGET)?.value;
      this.humangenPoseEditor?.setValue(value || "");
      return r;
    };

    // after a run: the input pose, the background and what happened to the stored edit
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const editor = this.humangenPoseEditor;
      if (editor && message) {
        const canvas = message.humangen_canvas?.[0];
        const fallback = canvas ? { width: canvas[0], height: canvas[1] } : null;
        const frame = message.humangen_pose_input?.[0] ?? null;
        editor.setInput(frame, fallback);
        const bg = message.humangen_background?.[0];
        if (bg) editor.setBackground(viewUrl(bg));
        editor.setReport(message.humangen_edit_report?.[0] || "");
      }
      return r;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.humangenPoseEditor?.destroy();
      return onRemoved?.apply(this, arguments);
    };
  },
});
