"""Hostile workflow files and command lines: malformed API and UI workflows, absurd sizes and nesting, long chains,
absurd batches. Each is refused before anything runs (exit 2) with one line naming the node id, its class and the
input, no traceback, no file written anywhere."""
from __future__ import annotations

import json

import pytest

from adversarial.runner_helpers import box, cli, error_lines, run_args, scale_prompt  # noqa: F401
from hgtoys import TOYS

pytestmark = pytest.mark.timeout(60)


def _refused(capsys, box, data, *extra, raw: bytes | None = None, expect_code=2):
    path = box.write("wf.json", raw if raw is not None else data)
    code, out, err = cli(capsys, *run_args(box, path, *extra))
    lines = error_lines(err)
    assert code == expect_code, err
    assert len(lines) == 1, err
    assert box.out_files() == []
    return lines[0]


# ---- API format ---------------------------------------------------------------------------------------------
def _api(**changes):
    prompt = scale_prompt()
    prompt.update(changes)
    return prompt


API_CASES = [
    ("inputs-string", _api(**{"2": {"class_type": "ImageScale", "inputs": "width=4"}}),
     "node 2 (ImageScale): 'inputs' must be an object"),
    ("inputs-list", _api(**{"2": {"class_type": "ImageScale", "inputs": [["1", 0], 4, 4]}}),
     "node 2 (ImageScale): 'inputs' must be an object"),
    ("inputs-number", _api(**{"2": {"class_type": "ImageScale", "inputs": 7}}),
     "node 2 (ImageScale): 'inputs' must be an object"),
    ("class-type-list", _api(**{"2": {"class_type": ["ImageScale"], "inputs": {}}}),
     "node 2: 'class_type' must be the node type's name (text), got a list"),
    ("class-type-number", _api(**{"2": {"class_type": 5, "inputs": {}}}),
     "node 2: 'class_type' must be the node type's name (text), got a number"),
    ("class-type-missing", _api(**{"2": {"inputs": {"width": 4}}}),
     "node 2: 'class_type' must be the node type's name (text), got null"),
    ("class-type-empty", _api(**{"2": {"class_type": " ", "inputs": {}}}),
     "node 2: 'class_type' must be the node type's name"),
    ("node-string", _api(**{"2": "ImageScale"}), "node 2: a node must be an object"),
    ("node-list", _api(**{"2": ["ImageScale", {}]}), "node 2: a node must be an object"),
    ("node-null", _api(**{"2": None}), "node 2: a node must be an object"),
    ("unknown-types-all-listed", _api(**{"2": {"class_type": "EvilNode", "inputs": {"image": ["1", 0]}},
                                         "4": {"class_type": "OtherEvil", "inputs": {}}}),
     "node 2 (EvilNode): unknown node type (also unknown: node 4 (OtherEvil))"),
    ("dangling-link", _api(**{"3": {"class_type": "SaveImage", "inputs": {"images": ["99", 0],
                                                                           "filename_prefix": "x"}}}),
     "node 3 (SaveImage) input 'images': linked to node 99, which is not in the workflow"),
    ("negative-slot", _api(**{"3": {"class_type": "SaveImage", "inputs": {"images": ["2", -1],
                                                                           "filename_prefix": "x"}}}),
     "node 3 (SaveImage) input 'images': linked to output -1 of node 2"),
    ("link-slot-too-high", _api(**{"3": {"class_type": "SaveImage", "inputs": {"images": [1, 2],
                                                                                "filename_prefix": "x"}}}),
     "node 3 (SaveImage) input 'images': linked to output 2 of node 1 (LoadImage), which has 2 outputs"),
    ("link-to-string-node", _api(**{"3": {"class_type": "SaveImage", "inputs": {"images": ["1", "0"],
                                                                                 "filename_prefix": "x"}}}),
     "node 3 (SaveImage) input 'images': wrong type: expects a link from a IMAGE output"),
    ("self-loop", _api(**{"2": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "area",
                                                                       "width": 4, "height": 4, "crop": "disabled"}}}),
     "node 2 (ImageScale) input 'image': the workflow has a cycle: 2 (ImageScale) -> 2 (ImageScale)"),
    ("two-node-cycle", _api(**{"1": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method":
                                                                            "area", "width": 4, "height": 4,
                                                                            "crop": "disabled"}}}),
     "node 1 (ImageScale) input 'image': the workflow has a cycle: 2 (ImageScale) -> 1 (ImageScale) -> "
     "2 (ImageScale)"),
    ("text-too-long", _api(**{"3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                                           "filename_prefix": "x" * 1_000_001}}}),
     "node 3 (SaveImage) input 'filename_prefix': the text is 1000001 characters long; at most 1000000"),
    ("nan-width", _api(**{"2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "area",
                                                                       "width": float("nan"), "height": 4,
                                                                       "crop": "disabled"}}}),
     "node 2 (ImageScale) input 'width': wrong type: expects an integer, got nan"),
    ("huge-width", _api(**{"2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "area",
                                                                        "width": 10**30, "height": 4,
                                                                        "crop": "disabled"}}}),
     "node 2 (ImageScale) input 'width': value 1000000000000000000000000000000 is bigger than the maximum 16384"),
    ("combo-not-text", _api(**{"2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0],
                                                                            "upscale_method": {"evil": 1},
                                                                            "width": 4, "height": 4,
                                                                            "crop": "disabled"}}}),
     "node 2 (ImageScale) input 'upscale_method': value {'evil': 1} is not in the list"),
]


@pytest.mark.parametrize("data,expected", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_malformed_api_workflow(capsys, box, data, expected):
    line = _refused(capsys, box, data)
    assert expected in line


# ---- UI format ----------------------------------------------------------------------------------------------
def _ui_node(nid, ntype, widgets=(), inputs=(), outputs=(), mode=0):
    return {"id": nid, "type": ntype, "mode": mode, "widgets_values": list(widgets),
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs]}


def _ui(nodes=None, links=None):
    if nodes is None:
        nodes = [_ui_node(1, "LoadImage", ["x.png", "image"], outputs=[{"name": "IMAGE", "type": "IMAGE"}]),
                 _ui_node(2, "SaveImage", ["hg"], inputs=[{"name": "images", "type": "IMAGE", "link": 1}])]
    return {"nodes": nodes, "links": [[1, 1, 0, 2, 0, "IMAGE"]] if links is None else links, "extra": {},
            "version": 0.4}


def _ui_with(index, node):
    ui = _ui()
    ui["nodes"][index] = node
    return ui


UI_CASES = [
    ("node-string", _ui_with(1, "SaveImage"), "entry 1 of 'nodes' must be an object with id and type, got a string"),
    ("node-list", _ui_with(1, [2, "SaveImage"]), "entry 1 of 'nodes' must be an object"),
    ("node-no-id", _ui_with(1, {"type": "SaveImage"}), "entry 1 of 'nodes' has no valid id"),
    ("node-id-list", _ui_with(1, {"id": [2], "type": "SaveImage"}), "entry 1 of 'nodes' has no valid id"),
    ("type-list", _ui_with(1, {"id": 2, "type": ["SaveImage"]}), "node 2: 'type' must be the node type's name"),
    ("inputs-string", _ui_with(1, {"id": 2, "type": "SaveImage", "inputs": "images"}),
     "node 2 (SaveImage): 'inputs' must be a list of objects, got a string"),
    ("input-entry-string", _ui_with(1, {"id": 2, "type": "SaveImage", "inputs": ["images"]}),
     "node 2 (SaveImage): input 0 must be an object, got a string"),
    ("input-link-string", _ui_with(1, _ui_node(2, "SaveImage", ["hg"], inputs=[{"name": "images", "link": "1"}])),
     "node 2 (SaveImage) input 'images': 'link' must be a link id (a number) or null, got a string"),
    ("widgets-string", _ui_with(1, {"id": 2, "type": "SaveImage", "widgets_values": "hg"}),
     "node 2 (SaveImage): 'widgets_values' must be a list, got a string"),
    ("mode-string", _ui_with(1, {"id": 2, "type": "SaveImage", "mode": "bypass"}),
     "node 2 (SaveImage): 'mode' must be a number"),
    ("duplicate-ids", _ui_with(1, _ui_node(1, "SaveImage")), "node 1 (SaveImage): two nodes have this id"),
    ("link-too-short", _ui(links=[[1, 2]]), "entry 0 of 'links' must be [id, from_node, from_slot, to_node, "
                                             "to_slot, type], got a list: [1, 2]"),
    ("link-string", _ui(links=["1-2"]), "entry 0 of 'links' must be [id, from_node, from_slot"),
    ("link-slot-string", _ui(links=[[1, 1, "0", 2, 0, "IMAGE"]]), "must hold a link id, two node ids and two slot"),
    ("link-id-null", _ui(links=[[None, 1, 0, 2, 0, "IMAGE"]]), "must hold a link id, two node ids and two slot"),
    ("link-missing-node", _ui(links=[[1, 7, 0, 2, 0, "IMAGE"]]), "link 1 connects node 7, which is not in the"),
    ("links-object", _ui(links={"1": [1, 1, 0, 2, 0, "IMAGE"]}), "'links' must be a list, got an object"),
    ("input-link-unknown", _ui(links=[]), "node 2 (SaveImage) input 'images': uses link 1, which is not in the "
                                         "workflow's links"),
    ("unknown-types-all-listed", _ui(nodes=_ui()["nodes"] + [_ui_node(5, "EvilA"), _ui_node(6, "EvilB")]),
     "node 5 (EvilA): unknown node type (also unknown: node 6 (EvilB))"),
    ("reroute-loop", _ui(nodes=_ui()["nodes"][:1] + [
        _ui_node(2, "SaveImage", ["hg"], inputs=[{"name": "images", "type": "IMAGE", "link": 1}]),
        _ui_node(3, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}]),
        _ui_node(4, "Reroute", inputs=[{"name": "", "type": "*", "link": 3}])],
        links=[[1, 3, 0, 2, 0, "IMAGE"], [2, 4, 0, 3, 0, "*"], [3, 3, 0, 4, 0, "*"]]),
     "a loop of reroutes/bypassed nodes runs through node 3"),
]


@pytest.mark.parametrize("data,expected", [c[1:] for c in UI_CASES], ids=[c[0] for c in UI_CASES])
def test_malformed_ui_workflow(capsys, box, data, expected):
    line = _refused(capsys, box, data)
    assert expected in line


# ---- files that are not workflows, nesting, sizes -----------------------------------------------------------
FILE_CASES = [
    ("deep-nesting-parser", b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply (more than 64 levels)"),
    ("deep-nesting-object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "JSON nested too deeply"),
    ("deep-nesting-in-input", json.dumps(_api(**{"3": {"class_type": "SaveImage", "inputs": {
        "images": ["2", 0], "filename_prefix": "x", "extra": json.loads("[" * 80 + "]" * 80)}}})).encode(),
     "JSON nested too deeply (more than 64 levels)"),
    ("not-utf8", b'{"1": {"class_type": "\xff\xfe"}}', "not valid JSON (not UTF-8 text"),
    ("huge-integer", b'{"1": {"class_type": "ImageScale", "inputs": {"width": ' + b"9" * 5000 + b"}}}",
     "not valid JSON (a number has more than 4300 digits)"),
    ("truncated", json.dumps(scale_prompt()).encode()[:-7], "not valid JSON"),
    ("empty", b"", "not valid JSON"),
    ("null", b"null", "neither an API prompt"),
    ("list", b"[1, 2, 3]", "neither an API prompt"),
    ("number", b"42", "neither an API prompt"),
    ("nodes-not-list", json.dumps({"nodes": "all", "links": []}).encode(),
     "'nodes' must be a list of node objects, got a string"),
    ("ui-without-links", json.dumps({"nodes": ["SaveImage"]}).encode(),
     "entry 0 of 'nodes' must be an object with id and type, got a string"),
    ("integer-400-digits", json.dumps(_api(**{"2": {"class_type": "ImageScale", "inputs": {
        "image": ["1", 0], "upscale_method": "area", "width": 10**400, "height": 4, "crop": "disabled"}}})).encode(),
     "node 2 (ImageScale) input 'width': value 10000000000000000000...(401 digits) is bigger than the maximum"),
]


@pytest.mark.parametrize("raw,expected", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_not_a_workflow(capsys, box, raw, expected):
    line = _refused(capsys, box, None, raw=raw)
    assert expected in line and "RecursionError" not in line


def test_file_too_large_is_not_parsed(capsys, box):
    raw = b'{"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "' + b"a" * (33 * 1024 * 1024) + b'"}}}'
    line = _refused(capsys, box, None, raw=raw)
    assert "the file is larger than 32 MiB" in line


def test_too_many_nodes(capsys, box):
    prompt = {str(i): {"class_type": "ImageScale", "inputs": {}} for i in range(5001)}
    assert "the workflow has 5001 nodes; at most 5000 are accepted" in _refused(capsys, box, prompt)


def test_990_node_chain_is_ordered_without_recursion(capsys, box):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    previous = "1"
    for i in range(2, 992):
        prompt[str(i)] = {"class_type": "ImageScale", "inputs": {"image": [previous, 0], "upscale_method": "area",
                                                                 "width": 4, "height": 4, "crop": "disabled"}}
        previous = str(i)
    prompt["992"] = {"class_type": "SaveImage", "inputs": {"images": [previous, 0], "filename_prefix": "chain"}}
    code, out, err = cli(capsys, *run_args(box, box.write("wf.json", prompt), "--dry-run"))
    assert code == 0, err
    assert "job 1/1: (as saved): 992 nodes" in out


def test_990_node_cycle_is_reported_without_recursion(capsys, box):
    prompt = {str(i): {"class_type": "ImageScale", "inputs": {"image": [str(i - 1 if i > 1 else 990), 0],
                                                              "upscale_method": "area", "width": 4, "height": 4,
                                                              "crop": "disabled"}} for i in range(1, 991)}
    prompt["991"] = {"class_type": "SaveImage", "inputs": {"images": ["990", 0], "filename_prefix": "x"}}
    line = _refused(capsys, box, prompt)
    assert "input 'image': the workflow has a cycle: 990 (ImageScale) -> 989 (ImageScale)" in line
    assert "... (990 nodes in all) -> 2 (ImageScale) -> 1 (ImageScale) -> 990 (ImageScale)" in line
    assert len(line) < 400


def test_990_reroute_chain_in_ui_is_followed_without_recursion(capsys, box):
    nodes = [_ui_node(1, "LoadImage", ["x.png", "image"], outputs=[{"name": "IMAGE", "type": "IMAGE"}])]
    links = []
    for i in range(2, 992):
        nodes.append(_ui_node(i, "Reroute", inputs=[{"name": "", "type": "*", "link": i - 1}]))
        links.append([i - 1, i - 1, 0, i, 0, "*"])
    nodes.append(_ui_node(992, "SaveImage", ["hg"], inputs=[{"name": "images", "type": "IMAGE", "link": 991}]))
    links.append([991, 991, 0, 992, 0, "IMAGE"])
    code, out, err = cli(capsys, *run_args(box, box.write("wf.json", _ui(nodes, links)), "--dry-run"))
    assert code == 0, err
    assert "job 1/1: (as saved): 2 nodes" in out


def test_many_inputs_on_one_reroute_chain_resolve_to_its_source(capsys, box):
    """Every link on a reroute chain resolves to the chain's source, each followed once (10,000 inputs on 5,000
    reroutes followed the whole chain per input: minutes)."""
    from humangen.runner.workflow import ui_to_api
    from humangen.runner.engine import Engine
    nodes = [_ui_node(1, "LoadImage", ["x.png", "image"], outputs=[{"name": "IMAGE", "type": "IMAGE"}])]
    links = []
    for i in range(2, 402):
        nodes.append(_ui_node(i, "Reroute", inputs=[{"name": "", "type": "*", "link": i - 1}]))
        links.append([i - 1, i - 1, 0, i, 0, "*"])
    for k, source in enumerate(range(2, 402, 40)):  # saves fed from points all along the chain
        nodes.append(_ui_node(500 + k, "SaveImage", [f"s{k}"], inputs=[{"name": "images", "type": "IMAGE",
                                                                        "link": 1000 + k}]))
        links.append([1000 + k, source, 0, 500 + k, 0, "IMAGE"])
    prompt = ui_to_api(_ui(nodes, links), Engine().specs())
    assert sorted(prompt) == ["1"] + [str(500 + k) for k in range(10)]
    assert all(prompt[str(500 + k)]["inputs"]["images"] == ["1", 0] for k in range(10))


@pytest.mark.parametrize("second,code,expected", [
    ([1, 1, 0, 2, 0, "IMAGE"], 0, ""),  # the same link saved twice: harmless
    ([1, 2, 0, 1, 0, "MASK"], 2, "two different links have id 1; link ids must be unique")])
def test_duplicate_link_ids(capsys, box, second, code, expected):
    ui = _ui()
    ui["links"].append(second)
    got, _, err = cli(capsys, *run_args(box, box.write("wf.json", ui), "--dry-run"))
    assert got == code and expected in err, err


def test_huge_integer_overrides_and_surrogates_are_clear(capsys, box):
    """A 3700-digit hex --set value is refused (json.dumps of the number crashed); a lone surrogate escape in a
    workflow string (valid JSON) does not break --resume's job key."""
    path = box.write("wf.json", scale_prompt())
    code, _, err = cli(capsys, *run_args(box, path, "--set", "2.width=0x" + "f" * 3700))
    assert code == 2 and "...(3702 characters) is not a valid int" in err and len(err) < 400, err
    prompt = scale_prompt()
    prompt["3"]["inputs"]["filename_prefix"] = "hg"
    prompt["2"]["_meta"] = {"title": "x"}
    prompt["2"]["inputs"]["junk"] = "\ud800"
    path = box.write("wf2.json", json.dumps(prompt))  # the surrogate as a JSON escape
    code, _, err = cli(capsys, *run_args(box, path, "--resume"))
    assert code == 0, err


# ---- batches and overrides ----------------------------------------------------------------------------------
BATCH_CASES = [
    ("two-million", ["--batch", "2.width=0-2000000"],
     "--batch 2.width=0-2000000: this sweep makes 2000001 jobs; at most 100000 are run at once"),
    ("astronomic", ["--batch", "2.width=0-" + "9" * 40], "this sweep makes 1" + "0" * 40 + " jobs"),
    ("product", ["--batch", "2.width=1-1000", "--batch", "2.height=1-1000"],
     "the sweeps make 1000000 jobs; at most 100000"),
    ("negative-range", ["--batch", "2.width=10-1"], "range '10-1' is empty"),
    ("bad-number", ["--batch", "2.width=1-x"], "'x' is not a valid int"),
    ("out-of-range-end", ["--batch", "2.width=1-99999"],
     "input 'width': value 99999 is bigger than the maximum 16384"),
    ("deep-json-set", ["--set", "2.image=" + "[" * 10_000 + "]" * 10_000], "JSON nested too deeply"),
    ("inf-set", ["--set", "2.width=inf"], "'inf' is not a valid int"),
    ("unknown-node-set", ["--set", "77.width=3"], "there is no node 77 in the workflow"),
    ("text-set-too-long", ["--set", "3.filename_prefix=" + "p" * 1_000_001],
     "input 'filename_prefix': the text is 1000001 characters long"),
]


@pytest.mark.parametrize("args,expected", [c[1:] for c in BATCH_CASES], ids=[c[0] for c in BATCH_CASES])
def test_absurd_batch_or_override(capsys, box, args, expected):
    line = _refused(capsys, box, scale_prompt(), *args)
    assert expected in line


def test_batch_jobs_are_made_lazily(box):
    import tracemalloc

    from humangen.runner.cli import make_jobs
    from humangen.runner.engine import Engine
    specs = Engine().specs()
    tracemalloc.start()
    try:
        jobs = make_jobs(scale_prompt(), specs, [], ["2.width=0-99999"])
        first = next(iter(jobs))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(jobs) == 100_000
    assert first[0] == "2.width=0" and first[1]["2"]["inputs"]["width"] == 0
    assert peak < 2 * 1024 * 1024  # one job, not 100000 of them


def test_toy_float_nan_and_inf_refused(capsys, box):
    from hgtoys import toy_prompt
    for bad in ("nan", "inf", "-inf"):
        path = box.write("wf.json", toy_prompt())
        code, _, err = cli(capsys, *run_args(box, path, "--set", f"1.gain={bad}"), extra_nodes=dict(TOYS))
        assert code == 2
        assert "node 1 (ToyConst) input 'gain': wrong type: expects a finite number" in err


def test_deadline_in_process_stops_before_the_next_job(capsys, box):
    from hgtoys import toy_prompt
    code, _, err = cli(capsys, *run_args(box, box.write("wf.json", toy_prompt()), "--batch", "1.value=1-3",
                                         "--deadline", "0.000001"), extra_nodes=dict(TOYS))
    assert code == 1
    assert error_lines(err) == ["error: job 1/3 (1.value=1): not started, the run's --deadline of 1e-06 s has passed"]
    assert "0/3 job(s) ok" in err


@pytest.mark.parametrize("width,height,side", [(16384, 0, "height"), (0, 16384, "width")])
def test_image_scale_keeping_the_aspect_is_bounded_before_allocating(capsys, box, width, height, side):
    """ImageScale with one side 0 follows the image's aspect ratio: a 1x64 (or 64x1) image scaled to 16384 on one
    side would be 16384 x 1048576 pixels (64 GiB as float RGB). It is refused, naming the input, before any pixel is
    allocated."""
    from PIL import Image
    Image.new("RGB", (1, 64) if side == "height" else (64, 1)).save(box.input / "thin.png")
    prompt = scale_prompt(image="thin.png")
    prompt["2"]["inputs"].update(width=width, height=height)
    line = _refused(capsys, box, prompt, expect_code=1)
    other = 16384 * 64
    size = f"{width}x{other}" if side == "height" else f"{other}x{height}"
    assert f"node 2 (ImageScale) failed: LimitExceededError: ImageScale: input '{'width' if width else 'height'}': " \
           f"1 images of {size} make" in line and "Fix:" in line, line


@pytest.mark.parametrize("prompt,expected", [
    ({"4": {"class_type": "Evil\x1b[2J\x1b[H", "inputs": {}}}, "unknown node type"),
    ({**scale_prompt(), "3\x1b]0;PWNED\x07": {"class_type": "SaveImage", "inputs": {
        "images": ["2", 0], "filename_prefix": "x"}}}, ""),
    ({**scale_prompt(), "3": {"class_type": "SaveImage", "inputs": {"images": ["Z\x1b[31m" + "z" * 100000, 0],
                                                                    "filename_prefix": "x"}}}, "not in the workflow"),
    ({"1": {"class_type": "C" * 200000, "inputs": {}}}, "unknown node type"),
])
def test_names_from_the_workflow_cannot_drive_the_terminal_or_flood_it(capsys, box, prompt, expected):
    """Node ids, class names and link sources reach the messages cut short and with control characters shown as
    '?': no terminal escape, no forged line, no megabyte line."""
    path = box.write("wf.json", prompt)
    code, out, err = cli(capsys, *run_args(box, path))
    assert "\x1b" not in err + out and "\x07" not in err + out
    assert all(len(line) < 2500 for line in err.splitlines()), max(len(line) for line in err.splitlines())
    if expected:
        assert code == 2 and len(error_lines(err)) == 1 and expected in err, err


@pytest.mark.parametrize("node_id,expected", [
    ("_2", "entry 1 of 'nodes' has no valid id"), (10 ** 300, "entry 1 of 'nodes' has no valid id")])
def test_ui_ids_the_api_format_cannot_hold_are_refused_by_convert(capsys, box, node_id, expected):
    """`convert` wrote API files the runner then refused: ids starting with '_' are metadata in the API format,
    and ids longer than 256 characters are refused there."""
    ui = _ui()
    ui["nodes"][1]["id"] = node_id
    ui["links"] = [[1, 1, 0, node_id, 0, "IMAGE"]]
    code, out, err = cli(capsys, "convert", box.write("wf.json", ui))
    assert code == 2 and expected in err and out == "" and len(err) < 600, err


def test_a_link_from_a_note_says_so(capsys, box):
    ui = _ui()
    ui["nodes"].append(_ui_node(9, "Note", ["hello"], outputs=[{"name": "x", "type": "IMAGE"}]))
    ui["links"] = [[1, 9, 0, 2, 0, "IMAGE"]]
    code, _, err = cli(capsys, *run_args(box, box.write("wf.json", ui), "--dry-run"))
    assert code == 2 and "input 'images': linked to node 9, a Note (a comment in the editor, it has no output)" in err


@pytest.mark.parametrize("ntype,expected", [
    ("workflow>MyGroup", "it is a group node; in ComfyUI convert it back to nodes"),
    ("workflow/MyGroup", "it is a group node"),
    ("0c1f2e3d-4b5a-6978-8a9b-0c1d2e3f4a5b", "it looks like a subgraph whose definition is missing or damaged"),
    ("NoSuchNode", "install the node pack that provides it")])
def test_unknown_node_types_get_the_fix_that_fits(capsys, box, ntype, expected):
    ui = _ui()
    ui["nodes"].append(_ui_node(7, ntype, []))
    code, _, err = cli(capsys, *run_args(box, box.write("wf.json", ui), "--dry-run"))
    assert code == 2 and f"node 7 ({ntype}): unknown node type; {expected}" in err, err
