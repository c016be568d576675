"""Workflow files: load the API prompt format and the UI format, and convert UI -> API.

API prompt: `{"<id>": {"class_type": "...", "inputs": {"name": value | ["<src_id>", out_index]}, "_meta": {...}}}`.
UI workflow: `{"nodes": [{"id", "type", "inputs": [{name, link, widget?}], "widgets_values": [...], "mode"}],
"links": [[id, from_node, from_slot, to_node, to_slot, type]], "extra": {...}}`.

`widgets_values` is positional: one value per widget input (INT/FLOAT/STRING/BOOLEAN/COMBO that is not
`forceInput`) in INPUT_TYPES order (required, then optional), whether or not the widget is also linked; seed inputs
(`control_after_generate`) add one extra value ("fixed", "randomize", ...) and LoadImage's upload button adds one.
Muted nodes (mode 2) are dropped; bypassed nodes (mode 4) pass their input of the same type through; Reroute
nodes pass through; PrimitiveNode values are written into the inputs they feed; notes are ignored.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .specs import SEED_CONTROL_VALUES, NodeSpec

MODE_MUTED = 2
MODE_BYPASS = 4
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only nodes
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"


class WorkflowError(ValueError):
    """A workflow that cannot be loaded, converted or validated. `node_id`/`class_type`/`input_name` if known."""

    def __init__(self, message: str, node_id: str | None = None, class_type: str | None = None,
                 input_name: str | None = None):
        self.node_id, self.class_type, self.input_name = node_id, class_type, input_name
        where = []
        if node_id is not None:
            where.append(f"node {node_id}")
        if class_type:
            where.append(f"({class_type})")
        if input_name:
            where.append(f"input '{input_name}'")
        self.problem = message
        super().__init__((" ".join(where) + ": " if where else "") + message)


@dataclass
class Workflow:
    prompt: dict[str, dict]  # API format
    source_format: str  # "api" or "ui"
    path: str | None = None
    ui: dict | None = None  # the UI workflow when loaded from one (stored in PNG metadata like the host)
    declared_models: list[dict] = field(default_factory=list)  # the UI workflow's frontend `models` metadata


def is_api_format(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and "class_type" in v for k, v in data.items() if not str(k).startswith("_"))


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise WorkflowError(f"workflow file {path!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path}: not valid JSON ({exc})") from None


def declared_models_of(data: Any) -> list[dict]:
    """The model metadata ComfyUI's frontend reads from a UI workflow: the top-level `models` list and each node's
    `properties.models` (`{name, url, directory}`), once each. Which files HumanGen's own nodes need is worked out
    from the graph (`utils.model_files.needed_files`); these entries add files of other packs' or core nodes."""
    if not isinstance(data, dict):
        return []
    entries = list(data.get("models") or [])
    for node in data.get("nodes") or []:
        if isinstance(node, dict) and isinstance(node.get("properties"), dict):
            entries += list(node["properties"].get("models") or [])
    out: dict[tuple, dict] = {}
    for m in entries:
        if isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("directory"), str):
            out.setdefault((m["directory"], m["name"]), {k: m[k] for k in ("name", "url", "directory") if k in m})
    return list(out.values())


def load_workflow(path: str, specs: dict[str, NodeSpec] | None = None) -> Workflow:
    """Read a workflow file in either format; UI workflows are converted with `specs` (node definitions)."""
    data = load_json(path)
    if isinstance(data, dict) and "prompt" in data and is_api_format(data["prompt"]):
        data = data["prompt"]  # a saved POST /prompt body
    if is_api_format(data):
        prompt = {str(k): _copy_node(v) for k, v in data.items() if not str(k).startswith("_")}
        return Workflow(prompt, "api", path, None)
    if is_ui_format(data):
        if specs is None:
            raise WorkflowError(f"{path}: a UI-format workflow needs the node definitions to convert it")
        return Workflow(ui_to_api(data, specs), "ui", path, data, declared_models_of(data))
    raise WorkflowError(f"{os.path.basename(path)}: neither an API prompt ({{id: {{class_type, inputs}}}}) nor a "
                        "UI workflow ({nodes, links}); export it from ComfyUI with Save or Export (API)")


def _copy_node(node: dict) -> dict:
    out = {"class_type": node["class_type"], "inputs": dict(node.get("inputs") or {})}
    if "_meta" in node:
        out["_meta"] = dict(node["_meta"])
    return out


def _links_table(data: dict) -> dict[int, tuple]:
    """link id -> (from_node, from_slot, to_node, to_slot) for both the list and the dict link layouts."""
    table = {}
    for link in data.get("links") or []:
        if isinstance(link, dict):
            lid, a, a_slot, b, b_slot = (link.get("id"), link.get("origin_id"), link.get("origin_slot"),
                                         link.get("target_id"), link.get("target_slot"))
        else:
            lid, a, a_slot, b, b_slot = link[:5]
        table[int(lid)] = (str(a), int(a_slot), str(b), int(b_slot))
    return table


def ui_to_api(data: dict, specs: dict[str, NodeSpec]) -> dict[str, dict]:
    """Convert a UI workflow to an API prompt using the node definitions (see module docstring)."""
    subgraph_ids = {sg.get("id") for sg in ((data.get("definitions") or {}).get("subgraphs") or [])}
    nodes = {str(n["id"]): n for n in data["nodes"]}
    links = _links_table(data)

    def source_of(link_id: int | None, seen: frozenset = frozenset()):
        """Follow a link back through reroutes and bypassed nodes: ("link", node, slot) | ("value", v) | None."""
        if link_id is None or int(link_id) not in links:
            return None
        src, slot, _, _ = links[int(link_id)]
        node = nodes.get(src)
        if node is None:
            raise WorkflowError(f"link {link_id} comes from node {src}, which is not in the workflow")
        if src in seen:
            raise WorkflowError(f"a loop of reroutes/bypassed nodes runs through node {src}")
        seen = seen | {src}
        mode, ntype = node.get("mode", 0), node.get("type")
        if mode == MODE_MUTED:
            return None
        if ntype == REROUTE:
            ins = node.get("inputs") or []
            return source_of(ins[0].get("link") if ins else None, seen)
        if ntype == PRIMITIVE:
            values = node.get("widgets_values") or []
            if not values:
                raise WorkflowError("the primitive node has no value", src, ntype)
            return ("value", values[0])
        if mode == MODE_BYPASS:
            out_type = ((node.get("outputs") or [{}] * (slot + 1))[slot] or {}).get("type")
            ins = node.get("inputs") or []
            candidates = ([ins[slot]] if slot < len(ins) and ins[slot].get("type") == out_type else []) + \
                [i for i in ins if i.get("type") == out_type]
            for inp in candidates:
                if inp.get("link") is not None:
                    return source_of(inp["link"], seen)
            return None
        return ("link", src, slot)

    prompt: dict[str, dict] = {}
    for nid, node in nodes.items():
        ntype = node.get("type")
        if ntype in VIRTUAL_NODES or ntype in (REROUTE, PRIMITIVE) or node.get("mode", 0) in (MODE_MUTED,
                                                                                                MODE_BYPASS):
            continue
        if ntype in subgraph_ids:
            raise WorkflowError("subgraphs are not supported by the headless runner; unpack the subgraph in "
                                "ComfyUI (right click > Unpack Subgraph) and save again", nid, ntype)
        spec = specs.get(ntype)
        if spec is None:
            raise WorkflowError("unknown node type; install the node pack that provides it (or check the "
                                "spelling)", nid, ntype)
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values")
        if isinstance(values, dict):  # some frontends store widgets by name
            for w in spec.widgets:
                if w.name in values:
                    inputs[w.name] = values[w.name]
        else:
            values = list(values or [])
            pos = 0
            for w in spec.widgets:
                if pos >= len(values):
                    break
                inputs[w.name] = values[pos]
                pos += 1
                if w.has_seed_control and pos < len(values) and values[pos] in SEED_CONTROL_VALUES:
                    pos += 1
                if w.options.get("image_upload") and pos < len(values) and values[pos] in ("image", "video"):
                    pos += 1
        for inp in node.get("inputs") or []:
            name = inp.get("name")
            if inp.get("link") is None or name is None:
                continue
            widget = inp.get("widget")
            if isinstance(widget, dict) and widget.get("name"):
                name = widget["name"]
            src = source_of(inp["link"])
            if src is None:  # fed by a muted node: a widget keeps its own value, a socket stays unconnected
                declared = spec.input(name)
                if declared is None or not declared.is_widget:
                    inputs.pop(name, None)
                continue
            if src[0] == "value":
                inputs[name] = src[1]
            else:
                inputs[name] = [src[1], src[2]]
        entry = {"class_type": ntype, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[nid] = entry
    return prompt


# ---- --set / --batch values -------------------------------------------------------------------------------------
def parse_assignment(text: str, flag: str) -> tuple[str | None, str, str]:
    """`NODE_ID.INPUT=VALUE` or `INPUT=VALUE` -> (node_id or None, input, value)."""
    if "=" not in text:
        raise WorkflowError(f"{flag} {text!r}: expected NODE_ID.INPUT=VALUE (or INPUT=VALUE for every node "
                            "that has that input)")
    target, value = text.split("=", 1)
    target = target.strip()
    node_id, _, name = target.rpartition(".")
    if not name:
        raise WorkflowError(f"{flag} {text!r}: the input name is empty")
    return (node_id or None), name, value


def coerce(value: Any, spec_type: str, *, where: str = "") -> Any:
    """A command-line string typed by the input's declared type (INT, FLOAT, BOOLEAN, STRING, COMBO)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if spec_type == "INT":
            if text.lower().lstrip("-").startswith(("0x", "0b", "0o")):
                return int(text, 0)
            number = float(text)
            if not number.is_integer():
                raise ValueError(text)
            return int(text) if text.lstrip("-").isdigit() else int(number)
        if spec_type == "FLOAT":
            return float(text)
    except ValueError:
        raise WorkflowError(f"{where}{value!r} is not a valid {spec_type.lower()}") from None
    if spec_type == "BOOLEAN":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise WorkflowError(f"{where}{value!r} is not a boolean (use true/false)")
    if spec_type in ("STRING", "COMBO"):
        return value
    # A socket type (IMAGE, ...) set from the command line: try JSON (e.g. ["4", 0] re-links an input).
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return value


def expand_sweep(text: str, spec_type: str, *, where: str = "") -> list[Any]:
    """`1-100`, `1,3,5-8` (INT ranges inclusive) or `a,b,c` -> a list of typed values."""
    values: list[Any] = []
    for part in [p for p in text.split(",") if p.strip() != ""]:
        part = part.strip()
        if spec_type == "INT":
            body = part[1:] if part.startswith("-") else part
            if "-" in body:
                lo_text, hi_text = body.split("-", 1)
                lo = coerce(("-" if part.startswith("-") else "") + lo_text, "INT", where=where)
                hi = coerce(hi_text, "INT", where=where)
                if hi < lo:
                    raise WorkflowError(f"{where}range {part!r} is empty (end below start)")
                values.extend(range(lo, hi + 1))
                continue
        values.append(coerce(part, spec_type, where=where))
    if not values:
        raise WorkflowError(f"{where}no values in sweep {text!r}")
    return values


def targets(prompt: dict[str, dict], specs: dict[str, NodeSpec], node_id: str | None, name: str,
            flag: str) -> list[tuple[str, str]]:
    """Which (node id, input type) an override addresses; a clear error when none."""
    if node_id is not None:
        node = prompt.get(node_id)
        if node is None:
            raise WorkflowError(f"{flag}: there is no node {node_id} in the workflow "
                                f"(ids: {', '.join(sorted(prompt, key=_id_key))})")
        spec = specs.get(node["class_type"])
        inp = spec.input(name) if spec else None
        if spec is not None and inp is None:
            known = ", ".join(i.name for i in spec.inputs)
            raise WorkflowError(f"{flag}: no such input (inputs: {known})", node_id, node["class_type"], name)
        return [(node_id, inp.type if inp else "STRING")]
    found = []
    for nid in sorted(prompt, key=_id_key):
        spec = specs.get(prompt[nid]["class_type"])
        inp = spec.input(name) if spec else None
        if inp is not None and inp.is_widget:
            found.append((nid, inp.type))
    if not found:
        raise WorkflowError(f"{flag}: no node in the workflow has a widget input named {name!r}")
    return found


def _id_key(node_id: str):
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))
