"""The in-process engine: validation messages, execution order, list semantics, caching, errors, interrupt."""
from __future__ import annotations

import pytest

from hgtoys import Calls, toy_prompt
from humangen.runner.engine import NodeExecutionError
from humangen.runner.workflow import WorkflowError
from humangen.utils.errors import HumanGenInterrupted


def _error(engine, prompt) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        engine.validate(prompt)
    return info.value


def test_runs_in_dependency_order_and_reports_ui(engine):
    result = engine.run(toy_prompt(2, 3))
    assert result.outputs == {"4": {"numbers": [5.0], "who": ["4"]}}
    assert result.executed == ["1", "2", "3", "4"]
    assert [c[0] for c in Calls.log] == ["const", "const", "add", "sink"]


def test_only_nodes_feeding_an_output_run(engine):
    prompt = toy_prompt()
    prompt["9"] = {"class_type": "ToyFail", "inputs": {"x": ["1", 0]}}  # dangling: never runs
    assert engine.run(prompt).executed == ["1", "2", "3", "4"]


def test_unknown_node(engine):
    prompt = toy_prompt()
    prompt["7"] = {"class_type": "NoSuchNode", "inputs": {}}
    err = _error(engine, prompt)
    assert (err.node_id, err.class_type) == ("7", "NoSuchNode")
    assert str(err).startswith("node 7 (NoSuchNode): unknown node type")


def test_missing_input(engine):
    prompt = toy_prompt()
    del prompt["3"]["inputs"]["b"]
    err = _error(engine, prompt)
    assert str(err) == "node 3 (ToyAdd) input 'b': required input is missing (connect a NUMBER output to it)"


def test_missing_widget_falls_back_to_its_default(engine):
    prompt = toy_prompt()
    del prompt["1"]["inputs"]["gain"]
    engine.validate(prompt)
    assert engine.run(prompt).outputs["4"]["numbers"] == [5.0]


def test_wrong_link_type(engine):
    prompt = toy_prompt()
    prompt["5"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}
    err = _error(engine, prompt)
    assert (err.node_id, err.class_type, err.input_name) == ("5", "SaveImage", "images")
    assert "wrong type: expects IMAGE, but is linked to a NUMBER output (output 0 of node 3 ToyAdd)" in str(err)


def test_value_on_a_socket_input(engine):
    prompt = toy_prompt()
    prompt["3"]["inputs"]["a"] = 4
    assert "input 'a': wrong type: expects a link from a NUMBER output, got the value 4" in str(_error(engine, prompt))


@pytest.mark.parametrize("name,value,message", [
    ("value", "abc", "wrong type: expects an integer, got 'abc'"),
    ("value", 1.5, "wrong type: expects an integer, got 1.5"),
    ("value", 101, "value 101 is bigger than the maximum 100"),
    ("value", -101, "value -101 is smaller than the minimum -100"),
    ("gain", "x", "wrong type: expects a number, got 'x'"),
    ("mode", "sideways", "value 'sideways' is not in the list: ['plain', 'neg']"),
])
def test_bad_widget_values(engine, name, value, message):
    prompt = toy_prompt()
    prompt["2"]["inputs"][name] = value
    err = _error(engine, prompt)
    assert str(err) == f"node 2 (ToyConst) input '{name}': {message}"


def test_link_to_missing_node_or_output(engine):
    prompt = toy_prompt()
    prompt["3"]["inputs"]["a"] = ["42", 0]
    assert str(_error(engine, prompt)) == \
        "node 3 (ToyAdd) input 'a': linked to node 42, which is not in the workflow"
    prompt["3"]["inputs"]["a"] = ["1", 3]
    assert "linked to output 3 of node 1 (ToyConst), which has 1 outputs" in str(_error(engine, prompt))


def test_cycle(engine):
    prompt = {
        "1": {"class_type": "ToyAdd", "inputs": {"a": ["2", 0], "b": ["2", 0]}},
        "2": {"class_type": "ToyAdd", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
        "3": {"class_type": "ToySink", "inputs": {"x": ["2", 0], "label": "x"}},
    }
    err = _error(engine, prompt)
    assert "the workflow has a cycle: 2 (ToyAdd) -> 1 (ToyAdd) -> 2 (ToyAdd)" in str(err)


def test_no_output_node(engine):
    prompt = toy_prompt()
    del prompt["4"]
    assert "has no output node" in str(_error(engine, prompt))


def test_validate_inputs_hook_names_the_node(engine, standalone_host):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    err = _error(engine, prompt)
    assert str(err).startswith("node 1 (LoadImage): invalid input: Invalid image file: missing.png")


def test_cache_reuses_unchanged_nodes_across_jobs(engine):
    engine.run(toy_prompt(2, 3))
    Calls.log.clear()
    second = engine.run(toy_prompt(2, 7))  # only node 2 changed
    assert second.cached == ["1"]
    assert second.executed == ["2", "3", "4"]
    assert Calls.log == [("const", 7), ("add", (2.0, 7.0)), ("sink", 9.0)]
    Calls.log.clear()
    third = engine.run(toy_prompt(2, 7))  # nothing changed: even the output node is reused, like the host
    assert third.executed == [] and Calls.log == []


def test_node_failure_names_node_and_class(engine):
    prompt = toy_prompt()
    prompt["5"] = {"class_type": "ToyFail", "inputs": {"x": ["3", 0]}}
    prompt["4"]["inputs"]["x"] = ["5", 0]
    with pytest.raises(NodeExecutionError) as info:
        engine.run(prompt)
    assert str(info.value) == "node 5 (ToyFail) failed: ValueError: boom: the toy failed"
    assert isinstance(info.value.__cause__, ValueError)


def test_interrupt_stops_the_job(engine, standalone_host):
    prompt = toy_prompt()
    prompt["5"] = {"class_type": "ToyInterrupt", "inputs": {"x": ["3", 0]}}
    prompt["4"]["inputs"]["x"] = ["5", 0]
    with pytest.raises(HumanGenInterrupted):
        engine.run(prompt)
    assert ("sink", 5.0) not in Calls.log


def test_list_outputs_map_over_nodes_and_input_is_list_collects(engine):
    prompt = {
        "1": {"class_type": "ToyList", "inputs": {"n": 4}},
        "2": {"class_type": "ToyConst", "inputs": {"value": 10, "seed": 0, "gain": 1.0, "mode": "plain"}},
        "3": {"class_type": "ToyAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},  # mapped 4 times
        "4": {"class_type": "ToySink", "inputs": {"x": ["3", 0], "label": "each"}},
        "5": {"class_type": "ToySum", "inputs": {"xs": ["3", 0]}},
        "6": {"class_type": "ToySink", "inputs": {"x": ["5", 0], "label": "sum"}},
    }
    out = engine.run(prompt).outputs
    assert out["4"]["numbers"] == [10.0, 11.0, 12.0, 13.0]
    assert out["6"]["numbers"] == [46.0]


def test_core_nodes_only_in_the_engine_not_in_the_pack(pack, engine):
    for node_id in ("LoadImage", "SaveImage", "PreviewImage", "ImageScale"):
        assert node_id in engine.classes
        assert node_id not in pack.NODE_CLASS_MAPPINGS


def test_progress_listener_receives_node_progress(standalone_host):
    from humangen.utils import host
    seen = []
    standalone_host.progress_listener = lambda value, total, preview: seen.append((value, total))
    with host.progress(3) as bar:
        for _ in range(3):
            bar.update(1)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_nodes_run_under_inference_mode_like_comfyui(toys):
    """ComfyUI's executor wraps every node call in torch.inference_mode(); the runner must too, or a node that
    needs autograd passes the workflow tests and fails in ComfyUI (regression: HumanGenSMPLXFit)."""
    import torch

    from humangen.runner.engine import Engine, registry

    seen = []

    class ToyGrad:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("NUMBER",)}}
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True
        CATEGORY = "toys"

        def run(self, x):
            seen.append(torch.is_inference_mode_enabled())
            return ()

    engine = Engine(registry({**toys, "ToyGrad": ToyGrad}))
    prompt = toy_prompt()
    prompt["4"] = {"class_type": "ToyGrad", "inputs": {"x": ["3", 0]}}
    engine.run(prompt)
    assert seen == [True]
    assert not torch.is_inference_mode_enabled()
