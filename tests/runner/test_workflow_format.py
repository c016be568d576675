"""UI -> API conversion (widgets_values by position, seed control values, links, muted/bypassed nodes, reroutes,
primitive nodes), format detection and typed --set / --batch values."""
from __future__ import annotations

import pytest

from humangen.runner.workflow import (WorkflowError, coerce, expand_sweep, load_workflow, parse_assignment,
                                      ui_to_api)


def _node(nid, ntype, widgets=(), inputs=(), outputs=(), mode=0):
    return {"id": nid, "type": ntype, "mode": mode, "widgets_values": list(widgets),
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs]}


def _ui(nodes, links):
    return {"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "extra": {}, "version": 0.4}


CONST_OUT = [{"name": "NUMBER", "type": "NUMBER", "links": []}]


def _const(nid, value, seed=0, control="randomize", gain=1.0, mode="plain", node_mode=0):
    return _node(nid, "ToyConst", [value, seed, control, gain, mode], outputs=CONST_OUT, mode=node_mode)


def _add(nid, link_a, link_b, mode=0):
    return _node(nid, "ToyAdd", inputs=[{"name": "a", "type": "NUMBER", "link": link_a},
                                        {"name": "b", "type": "NUMBER", "link": link_b}],
                 outputs=[{"name": "NUMBER", "type": "NUMBER", "links": []}], mode=mode)


def _sink(nid, link, label="out"):
    return _node(nid, "ToySink", [label], inputs=[{"name": "x", "type": "NUMBER", "link": link}])


def test_widgets_by_position_skipping_the_seed_control_value(engine):
    ui = _ui([_const(1, 5, seed=7, control="increment", gain=2.5, mode="neg"), _sink(2, 1)],
             [[1, 1, 0, 2, 0, "NUMBER"]])
    prompt = ui_to_api(ui, engine.specs())
    assert prompt == {"1": {"class_type": "ToyConst", "inputs": {"value": 5, "seed": 7, "gain": 2.5, "mode": "neg"}},
                      "2": {"class_type": "ToySink", "inputs": {"label": "out", "x": ["1", 0]}}}


def test_seed_without_control_value_still_maps(engine):
    ui = _ui([_node(1, "ToyConst", [5, 7, 2.5, "neg"], outputs=CONST_OUT), _sink(2, 1)],
             [[1, 1, 0, 2, 0, "NUMBER"]])
    assert ui_to_api(ui, engine.specs())["1"]["inputs"] == {"value": 5, "seed": 7, "gain": 2.5, "mode": "neg"}


def test_linked_widget_keeps_its_slot_and_takes_the_link(engine):
    const = _const(1, 5, seed=7)
    const["inputs"] = [{"name": "value", "type": "INT", "widget": {"name": "value"}, "link": 2}]
    primitive = _node(3, "PrimitiveNode", [42, "fixed"], outputs=[{"name": "INT", "type": "INT", "links": [2]}])
    ui = _ui([const, _sink(2, 1), primitive], [[1, 1, 0, 2, 0, "NUMBER"], [2, 3, 0, 1, 0, "INT"]])
    assert ui_to_api(ui, engine.specs())["1"]["inputs"] == {"value": 42, "seed": 7, "gain": 1.0, "mode": "plain"}


def test_muted_bypassed_reroute_and_notes(engine):
    nodes = [_const(1, 2), _const(2, 3), _add(3, 1, 2, mode=4),  # bypassed: passes input a through
             _node(4, "Reroute", inputs=[{"name": "", "type": "*", "link": 3}],
                   outputs=[{"name": "", "type": "NUMBER", "links": [4]}]),
             _sink(5, 4), _const(6, 9, node_mode=2), _node(7, "Note", ["hello"])]
    links = [[1, 1, 0, 3, 0, "NUMBER"], [2, 2, 0, 3, 1, "NUMBER"], [3, 3, 0, 4, 0, "NUMBER"],
             [4, 4, 0, 5, 0, "NUMBER"]]
    prompt = ui_to_api(_ui(nodes, links), engine.specs())
    assert sorted(prompt) == ["1", "2", "5"]
    assert prompt["5"]["inputs"]["x"] == ["1", 0]


def test_dict_links_layout(engine):
    ui = _ui([_const(1, 5), _sink(2, 1)],
             [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "NUMBER"}])
    assert ui_to_api(ui, engine.specs())["2"]["inputs"]["x"] == ["1", 0]


def test_unknown_ui_node_names_id_and_type(engine):
    ui = _ui([_const(1, 5), _node(8, "FancyNode")], [])
    with pytest.raises(WorkflowError) as info:
        ui_to_api(ui, engine.specs())
    assert str(info.value).startswith("node 8 (FancyNode): unknown node type")


def test_subgraph_is_reported(engine):
    ui = _ui([_node(1, "3f0e-subgraph")], [])
    ui["definitions"] = {"subgraphs": [{"id": "3f0e-subgraph"}]}
    with pytest.raises(WorkflowError, match="subgraphs are not supported"):
        ui_to_api(ui, engine.specs())


def test_format_detection_and_bad_files(engine, write_json, tmp_path):
    api = {"1": {"class_type": "ToyConst", "inputs": {"value": 1}}}
    wf = load_workflow(write_json(api), engine.specs())
    assert wf.source_format == "api" and wf.prompt == api
    wf = load_workflow(write_json({"prompt": api, "client_id": "x"}), engine.specs())
    assert wf.prompt == api
    with pytest.raises(WorkflowError, match="neither an API prompt"):
        load_workflow(write_json({"hello": 1}), engine.specs())
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(WorkflowError, match="not valid JSON"):
        load_workflow(str(tmp_path / "bad.json"), engine.specs())
    with pytest.raises(WorkflowError, match="does not exist"):
        load_workflow(str(tmp_path / "none.json"), engine.specs())


def test_declared_models_are_read(engine, write_json):
    """The frontend's model metadata: top-level `models` and nodes' `properties.models`, once each."""
    ui = _ui([_const(1, 5), _sink(2, 1)], [[1, 1, 0, 2, 0, "NUMBER"]])
    entry = {"name": "g.pkl", "url": "https://example.org/g.pkl", "directory": "stylegan"}
    ui["models"] = [entry, {"name": "no directory"}]
    ui["nodes"][0]["properties"] = {"models": [entry, dict(entry, name="h.pkl")]}
    wf = load_workflow(write_json(ui), engine.specs())
    assert wf.source_format == "ui" and wf.ui == ui
    assert wf.declared_models == [entry, dict(entry, name="h.pkl")]


@pytest.mark.parametrize("text,expected", [
    ("3.seed=5", ("3", "seed", "5")), ("seed=1-4", (None, "seed", "1-4")),
    ("12:3.text=a=b", ("12:3", "text", "a=b")),
])
def test_parse_assignment(text, expected):
    assert parse_assignment(text, "--set") == expected


def test_parse_assignment_errors():
    with pytest.raises(WorkflowError, match="expected NODE_ID.INPUT=VALUE"):
        parse_assignment("3.seed", "--set")


@pytest.mark.parametrize("value,kind,expected", [
    ("42", "INT", 42), ("-3", "INT", -3), ("1e3", "INT", 1000), ("0x10", "INT", 16), ("2.5", "FLOAT", 2.5),
    ("true", "BOOLEAN", True), ("off", "BOOLEAN", False), ("hi there", "STRING", "hi there"),
    ("bicubic", "COMBO", "bicubic"), ('["4", 0]', "IMAGE", ["4", 0]),
])
def test_coerce(value, kind, expected):
    assert coerce(value, kind) == expected


@pytest.mark.parametrize("value,kind", [("2.5", "INT"), ("abc", "FLOAT"), ("maybe", "BOOLEAN")])
def test_coerce_errors(value, kind):
    with pytest.raises(WorkflowError):
        coerce(value, kind)


@pytest.mark.parametrize("text,kind,expected", [
    ("1-4", "INT", [1, 2, 3, 4]), ("1,3,5-8", "INT", [1, 3, 5, 6, 7, 8]), ("-2-1", "INT", [-2, -1, 0, 1]),
    ("0.5,1", "FLOAT", [0.5, 1.0]), ("bilinear,lanczos", "COMBO", ["bilinear", "lanczos"]),
])
def test_expand_sweep(text, kind, expected):
    assert expand_sweep(text, kind) == expected


def test_expand_sweep_errors():
    with pytest.raises(WorkflowError, match="empty"):
        expand_sweep("5-1", "INT")
    with pytest.raises(WorkflowError, match="no values"):
        expand_sweep(",", "INT")


def test_api_twin_needs_the_same_model_files_as_its_ui_twin(engine):
    """The API format has no place for model metadata: what a workflow needs comes from its graph, so both twins
    of every shipped workflow agree, and the UI twin's frontend list is exactly that."""
    import json

    from hgtoys import WORKFLOWS
    from humangen.utils import model_files
    for path in sorted(WORKFLOWS.glob("*.json")):
        ui = load_workflow(str(path), engine.specs())
        api = load_workflow(str(WORKFLOWS / "api" / path.name), engine.specs())
        assert api.source_format == "api"
        assert model_files.needed_files(api.prompt) == model_files.needed_files(ui.prompt), path.name
        assert json.loads(path.read_text()).get("models", []) == model_files.frontend_models(ui.prompt), path.name
