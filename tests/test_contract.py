"""Contract over every registered node: what ComfyUI's loader and UI rely on."""
from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys

import pytest

from hgtest import ROOT
from humangen import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from humangen.nodes import FAILED_MODULES

NODES = sorted(NODE_CLASS_MAPPINGS.items())


def test_every_node_module_imports():
    assert FAILED_MODULES == {}


@pytest.mark.parametrize("node_id,cls", NODES, ids=[n for n, _ in NODES])
def test_node_contract(node_id, cls):
    assert re.fullmatch(r"HumanGen[A-Z][A-Za-z0-9]+", node_id), node_id
    # one display-name style for the whole pack: "<what it is> (HumanGen)", as the node-library search shows it
    assert re.fullmatch(r"[A-Z][^()]* \(HumanGen\)", NODE_DISPLAY_NAME_MAPPINGS.get(node_id) or ""), \
        f"{node_id}: display name {NODE_DISPLAY_NAME_MAPPINGS.get(node_id)!r} is not '<Name> (HumanGen)'"
    assert cls.CATEGORY.startswith("HumanGen"), cls.CATEGORY
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}, spec.keys()
    declared = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            declared.append(name)
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, (name, entry)
            kind = entry[0]
            opts = entry[1] if len(entry) == 2 else {}
            assert isinstance(opts, dict)
            if isinstance(kind, list):
                assert kind, f"{node_id}.{name}: empty COMBO list"
                if "default" in opts:
                    assert opts["default"] in kind, (name, opts["default"])
            else:
                assert isinstance(kind, str) and kind, (name, kind)
            if kind in ("INT", "FLOAT") and "default" in opts:
                lo, hi = opts.get("min", float("-inf")), opts.get("max", float("inf"))
                assert lo <= opts["default"] <= hi, (name, opts)
            # every input, link sockets included: the UI shows the tooltip on hover over the socket too
            assert isinstance(opts.get("tooltip"), str) and len(opts["tooltip"]) > 8, f"{node_id}.{name} has no tooltip"
    returns = cls.RETURN_TYPES
    assert isinstance(returns, tuple)
    if hasattr(cls, "RETURN_NAMES"):
        assert len(cls.RETURN_NAMES) == len(returns)
    assert isinstance(getattr(cls, "OUTPUT_TOOLTIPS", None), tuple), f"{node_id} has no OUTPUT_TOOLTIPS"
    assert len(cls.OUTPUT_TOOLTIPS) == len(returns), f"{node_id}: one OUTPUT_TOOLTIPS entry per output"
    assert all(isinstance(t, str) and len(t) > 8 for t in cls.OUTPUT_TOOLTIPS), (node_id, cls.OUTPUT_TOOLTIPS)
    if not returns:
        assert getattr(cls, "OUTPUT_NODE", False), f"{node_id} returns nothing but is not an output node"
    fn = getattr(cls, cls.FUNCTION)
    sig = inspect.signature(fn)
    has_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for name in declared + list(spec.get("hidden", {})):
        assert has_kwargs or name in sig.parameters, f"{node_id}.{cls.FUNCTION} does not accept {name!r}"
    required = [p.name for p in sig.parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    for name in required:
        assert name in spec.get("required", {}), f"{node_id}.{cls.FUNCTION} requires {name!r}, not a required input"
    assert len(getattr(cls, "DESCRIPTION", "")) > 20, f"{node_id} has no DESCRIPTION"


def test_models_never_import_comfyui():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|folder_paths|comfy_api|server|nodes)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "models").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_only_the_host_adapter_imports_comfyui():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|folder_paths|comfy_api)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if pattern.search(p.read_text()) and p.relative_to(ROOT).parts[0] not in ("tests", "bench", ".venv")
                 and p.relative_to(ROOT) != __import__("pathlib").Path("utils/host.py")]
    assert offenders == []


def test_data_flows_one_way_utils_do_not_import_models():
    """nodes -> models -> ops, with utils beneath: utils/ never imports models/ or nodes/ (building the generator a
    checkpoint holds is models.load_generator; utils/checkpoints only reads files)."""
    pattern = re.compile(r"^\s*(from\s+\.\.(models|nodes)\b|from\s+\.\.\s+import\s+.*\b(models|nodes)\b"
                         r"|(from|import)\s+humangen\.(models|nodes)\b)", re.M)
    offenders = {str(p.relative_to(ROOT)): len(pattern.findall(p.read_text())) for p in (ROOT / "utils").rglob("*.py")
                 if pattern.search(p.read_text())}
    assert offenders == {}, offenders


def test_pack_import_is_cheap_and_does_not_import_heavy_libraries():
    code = (
        "import importlib.util, json, sys, time\n"
        f"root = {str(ROOT)!r}\n"
        "t = time.perf_counter()\n"
        "spec = importlib.util.spec_from_file_location('hgpack', root + '/__init__.py',"
        " submodule_search_locations=[root])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['hgpack'] = m; spec.loader.exec_module(m)\n"
        "dt = time.perf_counter() - t\n"
        "heavy = [h for h in ('torch', 'numpy', 'diffusers', 'transformers', 'mmpose', 'mediapipe', 'smplx',"
        " 'spandrel', 'cv2') if h in sys.modules]\n"
        "print(json.dumps({'nodes': len(m.NODE_CLASS_MAPPINGS), 'heavy': heavy, 'seconds': dt}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["nodes"] == len(NODE_CLASS_MAPPINGS)
    assert report["seconds"] < 1.0, report


def test_a_missing_dependency_names_the_package_and_the_fix(monkeypatch):
    import sys

    from humangen.utils.errors import HumanGenError
    cls = NODE_CLASS_MAPPINGS["HumanGenAlignFullBody"]
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ModuleNotFoundError
    import torch
    image = torch.rand(1, 64, 32, 3)
    with pytest.raises(HumanGenError, match=r"HumanGenAlignFullBody: the Python package 'cv2' is not installed.*"
                                            r"python install\.py.*opencv-python-headless"):
        getattr(cls(), cls.FUNCTION)(image=image, resolution="512x256", person_index=-1, allow_partial=True,
                                     keypoint_threshold=0.3, segmentation="mediapipe_pose")


def test_a_stray_library_error_names_the_node_and_never_quotes_torchs_weights_only_advice(monkeypatch):
    """The node guard quotes a stray error's first line through `utils.errors.first_line`, the one mechanism that
    restates torch's advice to turn the safe loader off."""
    from humangen.utils.errors import HumanGenError
    cls = NODE_CLASS_MAPPINGS["HumanGenAlignFullBody"]
    import torch

    def boom(*_a, **_k):
        raise RuntimeError("Re-running `torch.load` with `weights_only` set to `False` will likely succeed\nmore")
    monkeypatch.setattr(torch.Tensor, "numpy", boom)
    with pytest.raises(HumanGenError) as info:
        getattr(cls(), cls.FUNCTION)(image=torch.rand(1, 64, 32, 3), resolution="512x256", person_index=-1,
                                     allow_partial=True, keypoint_threshold=0.3, segmentation="mediapipe_pose")
    text = str(info.value)
    assert text.startswith("HumanGenAlignFullBody: could not process its inputs (RuntimeError: refused by the "
                           "weights-only loader)"), text
    assert "weights_only" not in text


@pytest.mark.parametrize("error", ["attribute", "cv2", "pil_bomb", "hub_validator", "safetensors", "interrupt"])
def test_library_errors_become_node_errors_and_interrupts_pass(monkeypatch, error):
    """Errors that derive from Exception alone (OpenCV's cv2.error, PIL's DecompressionBombError, huggingface_hub's
    config validators, safetensors' errors) and a wrong-typed object's AttributeError get the node guard's message
    like numpy's and torch's; an interrupt passes unchanged."""
    import cv2
    import safetensors
    import torch
    from huggingface_hub.errors import StrictDataclassClassValidationError
    from PIL import Image

    from humangen.utils.errors import HumanGenError
    raised = {"attribute": AttributeError("'NoneType' object has no attribute 'layers'"),
              "cv2": cv2.error("Can't parse 'pt1'"), "pil_bomb": Image.DecompressionBombError("too many pixels"),
              "hub_validator": StrictDataclassClassValidationError("validate_architecture", ValueError("heads")),
              "safetensors": safetensors.SafetensorError("incomplete metadata"),
              "interrupt": KeyboardInterrupt()}[error]

    def boom(*_a, **_k):
        raise raised
    monkeypatch.setattr(torch.Tensor, "numpy", boom)
    cls = NODE_CLASS_MAPPINGS["HumanGenAlignFullBody"]
    call = lambda: getattr(cls(), cls.FUNCTION)(image=torch.rand(1, 64, 32, 3), resolution="512x256",  # noqa: E731
                                                person_index=-1, allow_partial=True, keypoint_threshold=0.3,
                                                segmentation="mediapipe_pose")
    if error == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            call()
        return
    with pytest.raises(HumanGenError, match=f"^HumanGenAlignFullBody: could not process its inputs "
                                            f"\\({type(raised).__name__}"):
        call()


def test_restated_errors_name_the_node_the_input_and_one_fix_once():
    """A deeper error that already named the input (or carries its own fix) is restated without repeating them."""
    from humangen.utils.errors import NodeInputError, UnsupportedCheckpointError, for_input
    deep = UnsupportedCheckpointError("HumanGenSMPLXLoader: input 'gender': X.npz lacks ['f']. Fix: use SMPLX_*.npz.")
    out = str(for_input(deep, "HumanGenSMPLXLoader", "gender", "use the official file."))
    assert out == "HumanGenSMPLXLoader: input 'gender': X.npz lacks ['f']. Fix: use SMPLX_*.npz."
    inner = NodeInputError("HumanGen", "file", "x.pt: holds a sparse tensor. Fix: use the release file.")
    out = str(for_input(inner, "HumanGenUpscaleModelLoader", "model_name", "use another model."))
    assert out.count("Fix:") == 1 and out.startswith("HumanGenUpscaleModelLoader: input 'model_name': x.pt: holds")
