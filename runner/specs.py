"""Node definitions as the runner sees them: one `NodeSpec` per node id, built either from a node class
(`INPUT_TYPES`, `RETURN_TYPES`, ...) or from a server's `/object_info` entry, so that format conversion, typed
`--set` values and validation work the same in-process and against a remote ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
_SEED_NAMES = ("seed", "noise_seed")  # the UI adds a control widget to these even without the flag


@dataclass
class InputSpec:
    name: str
    type: str  # "INT", "IMAGE", ... ; "COMBO" for a list of options
    options: dict[str, Any] = field(default_factory=dict)
    choices: list[Any] | None = None  # COMBO options
    required: bool = True

    @property
    def is_widget(self) -> bool:
        """True when the UI shows this input as a widget (its value sits in `widgets_values`)."""
        if self.options.get("forceInput") or self.options.get("defaultInput"):
            return False
        return self.type in WIDGET_TYPES

    @property
    def has_seed_control(self) -> bool:
        """The UI stores an extra `control_after_generate` value after this widget."""
        return self.type == "INT" and (bool(self.options.get("control_after_generate"))
                                       or self.name in _SEED_NAMES)


@dataclass
class NodeSpec:
    node_id: str
    inputs: list[InputSpec]
    hidden: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    output_node: bool = False

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    @property
    def widgets(self) -> list[InputSpec]:
        return [i for i in self.inputs if i.is_widget]


def _input_from_entry(name: str, entry: Any, required: bool) -> InputSpec:
    if not isinstance(entry, (tuple, list)) or not entry:
        entry = (entry,)
    kind = entry[0]
    options = dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, "COMBO", options, list(kind), required)
    if kind == "COMBO":
        return InputSpec(name, "COMBO", options, list(options.get("options", [])), required)
    return InputSpec(name, str(kind), options, None, required)


def spec_from_input_types(node_id: str, input_types: dict, outputs=(), output_names=(),
                          output_node: bool = False, order: dict | None = None) -> NodeSpec:
    inputs: list[InputSpec] = []
    for section, required in (("required", True), ("optional", False)):
        entries = input_types.get(section) or {}
        names = list((order or {}).get(section) or entries.keys())
        for name in names:
            if name in entries:
                inputs.append(_input_from_entry(name, entries[name], required))
    hidden = dict(input_types.get("hidden") or {})
    outputs = [o if isinstance(o, str) else "COMBO" for o in outputs]
    return NodeSpec(node_id, inputs, hidden, list(outputs), list(output_names or outputs), output_node)


def spec_from_class(node_id: str, cls: type) -> NodeSpec:
    returns = tuple(getattr(cls, "RETURN_TYPES", ()))
    return spec_from_input_types(node_id, cls.INPUT_TYPES(), returns,
                                 tuple(getattr(cls, "RETURN_NAMES", None) or returns),
                                 bool(getattr(cls, "OUTPUT_NODE", False)))


def spec_from_object_info(node_id: str, info: dict) -> NodeSpec:
    """A `/object_info` entry of ComfyUI (input, input_order, output, output_name, output_node)."""
    return spec_from_input_types(node_id, info.get("input") or {}, info.get("output") or (),
                                 info.get("output_name") or (), bool(info.get("output_node")),
                                 info.get("input_order"))


def specs_from_classes(classes: dict[str, type]) -> dict[str, NodeSpec]:
    return {node_id: spec_from_class(node_id, cls) for node_id, cls in classes.items()}


def types_match(declared: str, received: str) -> bool:
    """ComfyUI's socket rule: equal names, "*" on either side, or a comma-separated union that overlaps."""
    if declared == "*" or received == "*" or declared == received:
        return True
    a = {t.strip() for t in str(declared).split(",")}
    b = {t.strip() for t in str(received).split(",")}
    return bool(a & b)
