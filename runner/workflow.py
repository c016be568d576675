"""Workflow files: load the API prompt format and the UI format, and convert UI -> API.

API prompt: `{"<id>": {"class_type": "...", "inputs": {"name": value | ["<src_id>", out_index]}, "_meta": {...}}}`.
UI workflow: `{"nodes": [{"id", "type", "inputs": [{name, link, widget?}], "widgets_values": [...], "mode"}],
"links": [[id, from_node, from_slot, to_node, to_slot, type]], "extra": {...}}`.

`widgets_values` is positional: one value per widget input (INT/FLOAT/STRING/BOOLEAN/COMBO that is not
`forceInput`) in INPUT_TYPES order (required, then optional), whether or not the widget is also linked; seed inputs
(`control_after_generate`) add one extra value ("fixed", "randomize", ...) and LoadImage's upload button adds one.
Muted nodes (mode 2) are dropped; bypassed nodes (mode 4) pass their input of the same type through; Reroute
nodes pass through; PrimitiveNode values are written into the inputs they feed; notes are ignored.

Workflow files are untrusted (shared on forums): both formats are checked for shape before anything runs, and every
problem is one WorkflowError naming the node id, its class and the input. Sizes are bounded (file size, JSON
nesting, node count, text length) and the graph is ordered without recursion, so no file ends in RecursionError.
"""
from __future__ import annotations

import bisect
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..utils import limits
from ..utils.errors import one_line, shown
from .specs import SEED_CONTROL_VALUES, NodeSpec

MODE_MUTED = 2
MODE_BYPASS = 4
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only nodes
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"

# Limits for untrusted workflow files (README: Headless runner > Limits). Real workflows stay far below them.
MAX_WORKFLOW_BYTES = 32 * 1024 * 1024
MAX_NODES = 5000
MAX_TEXT_CHARS = 1_000_000  # one text input (prompts, pose JSON pasted into a STRING widget)
MAX_NODE_ID_CHARS = 256


class WorkflowError(ValueError):
    """A workflow that cannot be loaded, converted or validated. `node_id`/`class_type`/`input_name` if known."""

    def __init__(self, message: str, node_id: str | None = None, class_type: str | None = None,
                 input_name: str | None = None):
        self.node_id, self.class_type, self.input_name = node_id, class_type, input_name
        where = []  # names from the workflow: cut short, control characters shown as '?'
        if node_id is not None:
            where.append(f"node {one_line(node_id, 40)}")
        if class_type:
            where.append(f"({one_line(class_type, 80)})")
        if input_name:
            where.append(f"input '{one_line(input_name, 80)}'")
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
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def load_json(path: str) -> Any:
    """Parse a workflow file, refusing files over MAX_WORKFLOW_BYTES and nesting deeper than limits.MAX_JSON_DEPTH."""
    name = os.path.basename(path)
    try:
        chunks, size = [], 0
        with open(path, "rb") as f:
            # in chunks: read(MAX + 1) would allocate the whole cap up front, and a pipe or device has no size
            while size <= MAX_WORKFLOW_BYTES:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        raw = b"".join(chunks)
    except FileNotFoundError:
        raise WorkflowError(f"workflow file {path!r} does not exist") from None
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read the workflow file ({exc.strerror or exc})") from None
    if len(raw) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"{name}: the file is larger than {MAX_WORKFLOW_BYTES // (1024 * 1024)} MiB; a "
                            "workflow is a few hundred KiB at most")
    return parse_json(raw, name)


def parse_json(raw: bytes | str, name: str) -> Any:
    """JSON text -> data with the pack's JSON limits (`utils.limits.parse_json`); any failure is one WorkflowError
    naming `name`."""
    try:
        return limits.parse_json(raw, name)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None


def declared_models_of(data: Any) -> list[dict]:
    """The model metadata ComfyUI's frontend reads from a UI workflow: the top-level `models` list and each node's
    `properties.models` (`{name, url, directory}`), once each. Which files HumanGen's own nodes need is worked out
    from the graph (`utils.model_files.needed_files`); these entries add files of other packs' or core nodes."""
    if not isinstance(data, dict):
        return []
    nodes = data.get("nodes")
    sources = [data] + ([n.get("properties") for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else [])
    entries = []
    for source in sources:
        models = source.get("models") if isinstance(source, dict) else None
        if isinstance(models, list):
            entries += models
    out: dict[tuple, dict] = {}
    for m in entries:
        if isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("directory"), str):
            out.setdefault((m["directory"], m["name"]), {k: m[k] for k in ("name", "url", "directory") if k in m})
    return list(out.values())


def _looks_api(data: Any) -> bool:
    """An object of nodes of which at least one has a class_type: an API prompt (each node is then checked)."""
    return isinstance(data, dict) and "nodes" not in data and any(
        isinstance(v, dict) and "class_type" in v for k, v in data.items() if not str(k).startswith("_"))


def load_workflow(path: str, specs: dict[str, NodeSpec] | None = None) -> Workflow:
    """Read a workflow file in either format; UI workflows are converted with `specs` (node definitions).
    Both formats are checked (shape, unknown node types, dangling links, cycles, limits) before anything runs."""
    data = load_json(path)
    if isinstance(data, dict) and "prompt" in data and _looks_api(data["prompt"]):
        data = data["prompt"]  # a saved POST /prompt body
    if _looks_api(data):
        return Workflow(api_prompt(data, specs), "api", path, None)
    if is_ui_format(data):
        if specs is None:
            raise WorkflowError(f"{path}: a UI-format workflow needs the node definitions to convert it")
        return Workflow(ui_to_api(data, specs), "ui", path, data, declared_models_of(data))
    if isinstance(data, dict) and "nodes" in data:
        raise WorkflowError(f"{os.path.basename(path)}: 'nodes' must be a list of node objects, got "
                            f"{_kind(data['nodes'])}")
    raise WorkflowError(f"{os.path.basename(path)}: neither an API prompt ({{id: {{class_type, inputs}}}}) nor a "
                        "UI workflow ({nodes, links}); export it from ComfyUI with Save or Export (API)")


# ---- shape checks (untrusted files) -----------------------------------------------------------------------------
def _kind(value: Any) -> str:
    """How a JSON value is called in messages: 'a string ('abc')', 'a list', ..."""
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    kind = names.get(type(value), type(value).__name__)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = repr(value)
        kind += f" ({text[:40] + '...' if len(text) > 40 else text})"
    return kind


def is_link(value: Any) -> bool:
    """An API input value `[source node id, output index]`."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def api_prompt(data: dict, specs: dict[str, NodeSpec] | None) -> dict[str, dict]:
    """The API prompt in `data` (keys starting with '_' are metadata), each node checked and copied."""
    entries = [(str(k), v) for k, v in data.items() if not str(k).startswith("_")]
    if len(entries) > MAX_NODES:
        raise WorkflowError(f"the workflow has {len(entries)} nodes; at most {MAX_NODES} are accepted")
    prompt: dict[str, dict] = {}
    for nid, node in entries:
        if len(nid) > MAX_NODE_ID_CHARS:
            raise WorkflowError(f"a node id is longer than {MAX_NODE_ID_CHARS} characters", nid[:40] + "...")
        if not isinstance(node, dict):
            raise WorkflowError(f"a node must be an object {{\"class_type\": ..., \"inputs\": {{...}}}}, got "
                                f"{_kind(node)}", nid)
        ctype = node.get("class_type")
        if not isinstance(ctype, str) or not ctype.strip():
            raise WorkflowError(f"'class_type' must be the node type's name (text), got {_kind(ctype)}", nid)
        inputs = node.get("inputs")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise WorkflowError(f"'inputs' must be an object {{\"input name\": value}}, got {_kind(inputs)}",
                                nid, ctype)
        entry = {"class_type": ctype, "inputs": dict(inputs)}
        if isinstance(node.get("_meta"), dict):
            entry["_meta"] = dict(node["_meta"])
        prompt[nid] = entry
    check_prompt(prompt, specs)
    return prompt


def check_prompt(prompt: dict[str, dict], specs: Any, roots: list[str] | None = None) -> None:
    """Checks that need no node code: unknown node types (not in `specs`; all listed in one message), text longer
    than MAX_TEXT_CHARS, links to nodes that do not exist or to a negative output, cycles (searched from `roots`
    first, e.g. the output nodes, so that a cycle is reported as the executor would meet it)."""
    if specs is not None:
        unknown = [(nid, prompt[nid]["class_type"]) for nid in sorted(prompt, key=_id_key)
                   if prompt[nid]["class_type"] not in specs]
        if unknown:
            _raise_unknown(unknown)
    for nid, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
                raise WorkflowError(f"the text is {len(value)} characters long; at most {MAX_TEXT_CHARS} are "
                                    "accepted", nid, node["class_type"], name)
            if is_link(value):
                if str(value[0]) not in prompt:
                    raise WorkflowError(f"linked to node {one_line(value[0], 60)}, which is not in the workflow", nid,
                                        node["class_type"], name)
                if value[1] < 0:
                    raise WorkflowError(f"linked to output {one_line(value[1], 30)} of node {one_line(value[0], 60)}; "
                                        "outputs count from 0",
                                        nid, node["class_type"], name)
    if roots is None and specs is not None:  # output nodes first, as the executor meets the graph
        roots = [nid for nid in sorted(prompt, key=_id_key)
                 if getattr(specs.get(prompt[nid]["class_type"]), "output_node", False)]
    graph_order(prompt, list(roots or []) + sorted(prompt, key=_id_key))


def _raise_unknown(unknown: list[tuple[str, str]]) -> None:
    nid, ctype = unknown[0]
    also = ""
    if len(unknown) > 1:
        listed = ", ".join(f"node {one_line(n, 40)} ({one_line(c, 80)})" for n, c in unknown[1:21])
        also = f" (also unknown: {listed}{', ...' if len(unknown) > 21 else ''})"
    text = str(ctype)
    if ">" in text or text.startswith("workflow/"):  # the legacy group nodes' type names
        fix = "it is a group node; in ComfyUI convert it back to nodes (right-click it, 'Convert to nodes') and save"
    elif re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
        fix = ("it looks like a subgraph whose definition is missing or damaged; open the workflow in ComfyUI, "
               "unpack the subgraph and save")
    else:
        fix = "install the node pack that provides it (or check the spelling)"
    raise WorkflowError(f"unknown node type{also}; {fix}", nid, ctype)


def graph_order(prompt: dict[str, dict], roots: list[str]) -> list[str]:
    """Depth-first from `roots`: a topological order of every node they need (inputs before the node). Iterative,
    so a long chain cannot exhaust the interpreter's stack; links to missing nodes and cycles are reported."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def links_of(nid: str):
        node = prompt[nid]
        for name, value in (node.get("inputs") or {}).items():
            if is_link(value):
                yield name, str(value[0])

    for root in roots:
        if state.get(root) == 2:
            continue
        state[root] = 1
        path = [(root, links_of(root))]
        while path:
            nid, pending = path[-1]
            for name, src in pending:
                if src not in prompt:
                    raise WorkflowError(f"linked to node {one_line(src, 60)}, which is not in the workflow", nid,
                                        prompt[nid]["class_type"], name)
                seen = state.get(src)
                if seen == 2:
                    continue
                if seen == 1:
                    ids = [n for n, _ in path]
                    cycle = ids[ids.index(src):] + [src]
                    shown = [f"{n} ({prompt[n]['class_type']})" for n in cycle]
                    if len(shown) > 12:
                        shown = shown[:6] + [f"... ({len(cycle) - 1} nodes in all)"] + shown[-3:]
                    names = " -> ".join(shown)
                    raise WorkflowError(f"the workflow has a cycle: {names}", nid, prompt[nid]["class_type"], name)
                state[src] = 1
                path.append((src, links_of(src)))
                break
            else:
                path.pop()
                state[nid] = 2
                order.append(nid)
    return order


def _is_node_id(value: Any) -> bool:
    """An id the API format can hold too (what `convert` writes must load): at most MAX_NODE_ID_CHARS characters,
    and not starting with '_' (API keys starting with '_' are metadata)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return len(str(abs(value))) < MAX_NODE_ID_CHARS if value.bit_length() < 4000 else False
    return isinstance(value, str) and 0 < len(value) <= MAX_NODE_ID_CHARS and not value.startswith("_")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_ui(data: dict) -> None:
    """The shape of a UI workflow: nodes are objects with an id and a type, inputs/outputs are lists of objects,
    links are [id, from_node, from_slot, to_node, to_slot, type] (or objects), and every link names nodes that
    exist. One WorkflowError names the node, its type and the input."""
    nodes = data["nodes"]
    if len(nodes) > MAX_NODES:
        raise WorkflowError(f"the workflow has {len(nodes)} nodes; at most {MAX_NODES} are accepted")
    ids: set[str] = set()
    for index, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise WorkflowError(f"entry {index} of 'nodes' must be an object with id and type, got {_kind(node)}")
        nid = node.get("id")
        if not _is_node_id(nid):
            raise WorkflowError(f"entry {index} of 'nodes' has no valid id (got {_kind(nid)}; an id is a number, "
                                f"or text of at most {MAX_NODE_ID_CHARS} characters not starting with '_')")
        ntype = node.get("type")
        if not isinstance(ntype, str) or not ntype:
            raise WorkflowError(f"'type' must be the node type's name (text), got {_kind(ntype)}", str(nid))
        if str(nid) in ids:
            raise WorkflowError("two nodes have this id; ids must be unique", str(nid), ntype)
        ids.add(str(nid))
        mode = node.get("mode", 0)
        if mode is not None and not _is_index(mode):
            raise WorkflowError(f"'mode' must be a number, got {_kind(mode)}", str(nid), ntype)
        values = node.get("widgets_values")
        if values is not None and not isinstance(values, (list, dict)):
            raise WorkflowError(f"'widgets_values' must be a list, got {_kind(values)}", str(nid), ntype)
        if isinstance(values, list):
            for value in values:
                if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
                    raise WorkflowError(f"a widget value is {len(value)} characters long; at most "
                                        f"{MAX_TEXT_CHARS} are accepted", str(nid), ntype)
        for key in ("inputs", "outputs"):
            entries = node.get(key)
            if entries is None:
                continue
            if not isinstance(entries, list):
                raise WorkflowError(f"'{key}' must be a list of objects, got {_kind(entries)}", str(nid), ntype)
            for slot, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    raise WorkflowError(f"{key[:-1]} {slot} must be an object, got {_kind(entry)}", str(nid), ntype)
                name = entry.get("name")
                if name is not None and not isinstance(name, str):
                    raise WorkflowError(f"{key[:-1]} {slot}: 'name' must be text, got {_kind(name)}", str(nid), ntype)
                if key == "inputs":
                    link = entry.get("link")
                    if link is not None and not _is_index(link):
                        raise WorkflowError(f"'link' must be a link id (a number) or null, got {_kind(link)}",
                                            str(nid), ntype, name)
                    widget = entry.get("widget")
                    if widget is not None and not isinstance(widget, dict):
                        raise WorkflowError(f"'widget' must be an object, got {_kind(widget)}", str(nid), ntype, name)
    links = data.get("links")
    if links is None:
        links = []
    if not isinstance(links, list):
        raise WorkflowError(f"'links' must be a list, got {_kind(links)}")
    for index, link in enumerate(links):
        if isinstance(link, dict):
            fields = [link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
        elif isinstance(link, list) and len(link) >= 5:
            fields = link[:5]
        else:
            raise WorkflowError(f"entry {index} of 'links' must be [id, from_node, from_slot, to_node, to_slot, "
                                f"type], got {_kind(link)}: {json.dumps(link)[:80]}")
        lid, a, a_slot, b, b_slot = fields
        if not (_is_index(lid) and _is_node_id(a) and _is_index(a_slot) and _is_node_id(b) and _is_index(b_slot)):
            raise WorkflowError(f"link {json.dumps(link)[:80]} (entry {index} of 'links') must hold a link id, "
                                "two node ids and two slot numbers")
        for end in (a, b):
            if str(end) not in ids:
                raise WorkflowError(f"link {one_line(lid, 30)} connects node {one_line(end, 60)}, which is not in "
                                    "the workflow")


def _links_table(data: dict) -> dict[int, tuple]:
    """link id -> (from_node, from_slot, to_node, to_slot) for both the list and the dict link layouts."""
    table = {}
    for link in data.get("links") or []:
        if isinstance(link, dict):
            lid, a, a_slot, b, b_slot = (link.get("id"), link.get("origin_id"), link.get("origin_slot"),
                                         link.get("target_id"), link.get("target_slot"))
        else:
            lid, a, a_slot, b, b_slot = link[:5]
        entry = (str(a), int(a_slot), str(b), int(b_slot))
        if table.setdefault(int(lid), entry) != entry:  # identical copies occur in saved files and are harmless
            raise WorkflowError(f"two different links have id {one_line(lid, 30)}; link ids must be unique (the "
                                "file is damaged: reconnect the inputs in ComfyUI and save it again)")
    return table


def ui_to_api(data: dict, specs: dict[str, NodeSpec]) -> dict[str, dict]:
    """Convert a UI workflow to an API prompt using the node definitions (see module docstring). The UI file is
    checked first (check_ui), and the result like an API file (check_prompt)."""
    check_ui(data)
    definitions = data.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    subgraph_ids = {sg.get("id") for sg in subgraphs if isinstance(sg, dict) and isinstance(sg.get("id"), str)
                    } if isinstance(subgraphs, list) else set()
    nodes = {str(n["id"]): n for n in data["nodes"]}
    links = _links_table(data)

    resolved: dict[int, Any] = {}  # link id -> its source: every link on a followed chain resolves to the same

    def source_of(link_id: int | None):
        """Follow a link back through reroutes and bypassed nodes: ("link", node, slot) | ("value", v) | None.
        Each link is followed once (10,000 inputs on a chain of 5,000 reroutes took minutes)."""
        chain: list[int] = []
        result = _follow(link_id, chain)
        resolved.update(dict.fromkeys(chain, result))
        return result

    def _follow(link_id: int | None, chain: list[int]):
        """A loop, not recursion: a long chain of reroutes must not exhaust the stack."""
        seen: set[str] = set()
        while True:
            if link_id is None or int(link_id) not in links:
                return None
            if int(link_id) in resolved:
                return resolved[int(link_id)]
            chain.append(int(link_id))
            src, slot, _, _ = links[int(link_id)]
            node = nodes.get(src)
            if node is None:
                raise WorkflowError(f"link {one_line(link_id, 30)} comes from node {one_line(src, 60)}, which is "
                                    "not in the workflow")
            if src in seen:
                raise WorkflowError(f"a loop of reroutes/bypassed nodes runs through node {one_line(src, 60)}", src,
                                    node.get("type"))
            seen.add(src)
            mode, ntype = node.get("mode", 0), node.get("type")
            if mode == MODE_MUTED:
                return None
            if ntype == REROUTE:
                ins = node.get("inputs") or []
                link_id = ins[0].get("link") if ins else None
                continue
            if ntype == PRIMITIVE:
                values = node.get("widgets_values") or []
                if not values:
                    raise WorkflowError("the primitive node has no value", src, ntype)
                return ("value", values[0] if isinstance(values, list) else next(iter(values.values())))
            if mode == MODE_BYPASS:
                outs = node.get("outputs") or []
                out_type = (outs[slot] or {}).get("type") if slot < len(outs) else None
                ins = node.get("inputs") or []
                candidates = ([ins[slot]] if slot < len(ins) and ins[slot].get("type") == out_type else []) + \
                    [i for i in ins if i.get("type") == out_type]
                link_id = next((i["link"] for i in candidates if i.get("link") is not None), None)
                if link_id is None:
                    return None
                continue
            return ("link", src, slot)

    unknown = [(nid, n.get("type")) for nid, n in nodes.items()
               if n.get("type") not in specs and n.get("type") not in VIRTUAL_NODES
               and n.get("type") not in (REROUTE, PRIMITIVE) and n.get("type") not in subgraph_ids
               and n.get("mode", 0) not in (MODE_MUTED, MODE_BYPASS)]
    if unknown:
        _raise_unknown(unknown)
    prompt: dict[str, dict] = {}
    for nid, node in nodes.items():
        ntype = node.get("type")
        if ntype in VIRTUAL_NODES or ntype in (REROUTE, PRIMITIVE) or node.get("mode", 0) in (MODE_MUTED,
                                                                                                MODE_BYPASS):
            continue
        if ntype in subgraph_ids:
            raise WorkflowError("subgraphs are not supported by the headless runner; unpack the subgraph in "
                                "ComfyUI (right click > Unpack Subgraph) and save again", nid, ntype)
        spec = specs[ntype]
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
            if int(inp["link"]) not in links:
                raise WorkflowError(f"uses link {one_line(inp['link'], 30)}, which is not in the workflow's links",
                                    nid, ntype, name)
            widget = inp.get("widget")
            if isinstance(widget, dict) and isinstance(widget.get("name"), str) and widget["name"]:
                name = widget["name"]
            src = source_of(inp["link"])
            if src is None:  # fed by a muted node: a widget keeps its own value, a socket stays unconnected
                declared = spec.input(name)
                if declared is None or not declared.is_widget:
                    inputs.pop(name, None)
                continue
            if src[0] == "value":
                inputs[name] = src[1]
            elif nodes[src[1]].get("type") in VIRTUAL_NODES:  # a note has no outputs that run
                raise WorkflowError(f"linked to node {one_line(src[1], 60)}, a {nodes[src[1]]['type']} (a comment "
                                    "in the editor, it has no output); connect a node that makes this input's value",
                                    nid, ntype, name)
            else:
                inputs[name] = [src[1], src[2]]
        entry = {"class_type": ntype, "inputs": inputs}
        if isinstance(node.get("title"), str) and node["title"]:
            entry["_meta"] = {"title": node["title"]}
        prompt[nid] = entry
    check_prompt(prompt, specs)
    return prompt


# ---- --set / --batch values -------------------------------------------------------------------------------------
def parse_assignment(text: str, flag: str) -> tuple[str | None, str, str]:
    """`NODE_ID.INPUT=VALUE` or `INPUT=VALUE` -> (node_id or None, input, value)."""
    if "=" not in text:
        raise WorkflowError(f"{flag} {shown(text)}: expected NODE_ID.INPUT=VALUE (or INPUT=VALUE for every node "
                            "that has that input)")
    target, value = text.split("=", 1)
    target = target.strip()
    node_id, _, name = target.rpartition(".")
    if not name:
        raise WorkflowError(f"{flag} {shown(text)}: the input name is empty")
    return (node_id or None), name, value


def coerce(value: Any, spec_type: str, *, where: str = "") -> Any:
    """A command-line string typed by the input's declared type (INT, FLOAT, BOOLEAN, STRING, COMBO)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if spec_type == "INT":
            if len(text) > 100:  # past any input's range; int() of thousands of digits is refused or slow
                raise ValueError(text)
            if text.lower().lstrip("-").startswith(("0x", "0b", "0o")):
                return int(text, 0)
            number = float(text)
            if not number.is_integer():
                raise ValueError(text)
            return int(text) if text.lstrip("-").isdigit() else int(number)
        if spec_type == "FLOAT":
            return float(text)
    except ValueError:
        raise WorkflowError(f"{where}{shown(value)} is not a valid {spec_type.lower()}") from None
    if spec_type == "BOOLEAN":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise WorkflowError(f"{where}{shown(value)} is not a boolean (use true/false)")
    if spec_type in ("STRING", "COMBO"):
        return value
    # A socket type (IMAGE, ...) set from the command line: try JSON (e.g. ["4", 0] re-links an input).
    try:
        return parse_json(text, where.rstrip(": ") or "value")
    except WorkflowError:
        if text.startswith(("[", "{")):
            raise
        return value


class Sweep(Sequence):
    """The values of one --batch axis. Integer ranges stay `range` objects, so `0-99999` costs a few bytes, not a
    list of 100000 numbers; `representatives()` gives the values worth validating (each listed value and the ends
    of each range, since a range check that passes at both ends passes inside)."""

    def __init__(self, parts: list):
        self.parts = parts  # `range`s (step 1) and single values
        self._starts = list(itertools.accumulate((_part_size(p) for p in parts[:-1]), initial=0))
        self.size = sum(_part_size(p) for p in parts)  # may exceed sys.maxsize, which len() cannot return
        self._len = self.size

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        at = bisect.bisect_right(self._starts, index) - 1  # the part holding it (a long listed sweep: no scan)
        part, offset = self.parts[at], index - self._starts[at]
        return part[offset] if isinstance(part, range) else part

    def __iter__(self):
        for part in self.parts:
            if isinstance(part, range):
                yield from part
            else:
                yield part

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, (list, tuple, Sweep)) and len(other) == len(self) and list(other) == list(self)

    def __repr__(self) -> str:
        return f"Sweep({self.parts!r})"

    def representatives(self) -> list[int]:
        """Indices of the values that validation must see."""
        indices, start = [], 0
        for part in self.parts:
            size = _part_size(part)
            indices.extend(sorted({start, start + size - 1}))
            start += size
        return indices


def _part_size(part: Any) -> int:
    return max(0, part.stop - part.start) if isinstance(part, range) else 1


def expand_sweep(text: str, spec_type: str, *, where: str = "") -> Sweep:
    """`1-100`, `1,3,5-8` (INT ranges inclusive) or `a,b,c` -> the typed values (a lazy sequence)."""
    parts: list[Any] = []
    for part in [p for p in text.split(",") if p.strip() != ""]:
        part = part.strip()
        if spec_type == "INT":
            body = part[1:] if part.startswith("-") else part
            if "-" in body:
                lo_text, hi_text = body.split("-", 1)
                lo = coerce(("-" if part.startswith("-") else "") + lo_text, "INT", where=where)
                hi = coerce(hi_text, "INT", where=where)
                if hi < lo:
                    raise WorkflowError(f"{where}range {shown(part)} is empty (end below start)")
                parts.append(range(lo, hi + 1))
                continue
        parts.append(coerce(part, spec_type, where=where))
    if not parts:
        raise WorkflowError(f"{where}no values in sweep {shown(text)}")
    return Sweep(parts)


def targets(prompt: dict[str, dict], specs: dict[str, NodeSpec], node_id: str | None, name: str,
            flag: str) -> list[tuple[str, str]]:
    """Which (node id, input type) an override addresses; a clear error when none."""
    if node_id is not None:
        node = prompt.get(node_id)
        if node is None:
            ids = sorted(prompt, key=_id_key)
            listed = ", ".join(one_line(i, 40) for i in ids[:30]) + (f", ... ({len(ids)} in all)" * (len(ids) > 30))
            raise WorkflowError(f"{flag}: there is no node {one_line(node_id, 60)} in the workflow (ids: {listed})")
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
    number = limits.plain_int(str(node_id))
    return (0, number, "") if number is not None else (1, 0, str(node_id))
