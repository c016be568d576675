"""Every JSON the pack reads from a file, a checkpoint, a PNG or a workflow value goes through one bounded reader
(`utils.limits.parse_json` / `read_json_file`): malformed, too deep or too large text is one clear error naming
what was read, never a RecursionError or a raw traceback."""
from __future__ import annotations

import json

import pytest
import torch

from humangen.utils import limits
from humangen.utils.errors import UnsupportedCheckpointError

DEEP = "[" * 100_000 + "]" * 100_000  # beyond Python's recursion limit
NESTED_70 = "[" * 70 + "]" * 70      # parses, but deeper than MAX_JSON_DEPTH


def test_read_json_file_bounds_size_depth_and_reports_the_file(tmp_path):
    ok = tmp_path / "ok.json"
    ok.write_text('{"a": [1, 2]}')
    assert limits.read_json_file(str(ok)) == {"a": [1, 2]}
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 600 + "0]")
    with pytest.raises(ValueError, match=r"^big.json: more than 1000 bytes, the limit for a JSON file$"):
        limits.read_json_file(str(big), max_bytes=1000)
    for name, text, problem in (("deep.json", DEEP, "JSON nested too deeply"),
                                ("seventy.json", NESTED_70, "JSON nested too deeply \\(more than 64 levels\\)"),
                                ("bad.json", "{oops", "not valid JSON")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"^cfg {name}: {problem}"):
            limits.read_json_file(str(tmp_path / name), f"cfg {name}")
    with pytest.raises(ValueError, match="^missing.json: cannot be read"):
        limits.read_json_file(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("text, problem", [(DEEP, "nested too deeply"), ("{oops", "not valid JSON"),
                                           ("[1, 2]", "must be a JSON object")])
def test_generator_safetensors_with_hostile_init_kwargs(tmp_path, text, problem):
    from safetensors.torch import save_file

    from humangen.utils.checkpoints import read_safetensors
    path = tmp_path / "g.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"init_kwargs": text})
    with pytest.raises(UnsupportedCheckpointError, match=f"g.safetensors: init_kwargs metadata.*{problem}"):
        read_safetensors(str(path))


def test_latent_png_with_deeply_nested_latent_text(tmp_path):
    from adversarial import pack_helpers as H
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from humangen import NODE_CLASS_MAPPINGS as N
    from humangen.utils.latent_png import LATENT_KEY
    e = H.env(tmp_path)
    info = PngInfo()
    info.add_text(LATENT_KEY, json.dumps({"space": "w+", "tensor": json.loads(NESTED_70)}))
    Image.new("RGB", (8, 16)).save(e.input / "deep.png", pnginfo=info)
    H.refusal(lambda: N["HumanGenLoadLatentFromImage"]().load("deep.png"), node="HumanGenLoadLatentFromImage",
              input_name="image", match="stored latent: JSON nested too deeply")


def test_humansd_config_sidecar_and_metadata(tmp_path):
    from safetensors.torch import save_file

    from humangen.models.humansd.loader import CONFIG_METADATA_KEY, SIDECAR_SUFFIX, read_state_dict
    path = tmp_path / "hsd.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={CONFIG_METADATA_KEY: DEEP})
    with pytest.raises(UnsupportedCheckpointError, match="hsd.safetensors"):
        read_state_dict(str(path))
    save_file({"w": torch.zeros(2)}, str(path))
    (tmp_path / ("hsd" + SIDECAR_SUFFIX)).write_text(NESTED_70)
    with pytest.raises(UnsupportedCheckpointError,
                       match=f"hsd{SIDECAR_SUFFIX}: JSON nested too deeply.*repair or delete this config file"):
        read_state_dict(str(path))


def test_smplx_fit_file(tmp_path):
    from humangen.models.body.fit import SMPLXFit
    (tmp_path / "fit.json").write_text(DEEP)
    with pytest.raises(ValueError, match="^fit.json: JSON nested too deeply"):
        SMPLXFit.load(str(tmp_path / "fit.json"))
