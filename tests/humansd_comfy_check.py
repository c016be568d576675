"""Run inside a real ComfyUI checkout (argv[1]); prints one JSON line. Used by test_humansd_comfyui.py in a
subprocess so ComfyUI's modules never leak into the test process.

Full-size HumanSD layout with random weights (no real weights needed): ComfyUI's model detection on an 8-channel
SD2 UNet, the stock sampler failing without our patch, sampling with HumanGenHumanSDApplyPose, and eps parity
between ComfyUI's UNet and our diffusers UNet loaded through our LDM key mapping."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

COMFY = sys.argv[1]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, COMFY)
for extra in filter(None, os.environ.get("COMFYUI_EXTRA_SITE", "").split(os.pathsep)):
    sys.path.append(extra)  # packages ComfyUI needs that the test venv lacks (torchsde …)
sys.path.insert(0, str(Path(__file__).resolve().parent))

spec = importlib.util.spec_from_file_location("humangen", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
pack = importlib.util.module_from_spec(spec)
sys.modules["humangen"] = pack
_compat_spec = importlib.util.spec_from_file_location("_hg_compat", ROOT / "utils" / "compat.py")
_compat = importlib.util.module_from_spec(_compat_spec)
_compat_spec.loader.exec_module(_compat)
_compat.install_import_hook()  # this venv's torchvision needs the CPU nms shim (ComfyUI imports torchvision)
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
sys.argv = ["main.py", "--cpu"]
import comfy.cli_args  # noqa: E402,F401
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
import comfy.model_detection  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402,F401

spec.loader.exec_module(pack)  # after the host modules: the pack detects ComfyUI now
report = {"registered": "HumanGenHumanSDApplyPose" in pack.NODE_CLASS_MAPPINGS}

import humansd_tiny as T  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

from humangen.models.humansd import convert as conv  # noqa: E402
from humangen.models.humansd.configs import load_configs  # noqa: E402

cfg = load_configs()
with torch.device("meta"):
    meta_unet = UNet2DConditionModel(**cfg["unet"])
ldm = {conv.UNET_PREFIX + k: v for k, v in T.invert_table(meta_unet.state_dict(),
                                                           conv.unet_prefix_table(cfg["unet"])).items()}
model_config = comfy.model_detection.model_config_from_unet(ldm, conv.UNET_PREFIX)
report["detected"] = type(model_config).__name__
report["in_channels"] = model_config.unet_config.get("in_channels")
report["model_type"] = str(model_config.model_type(ldm, conv.UNET_PREFIX))
model_config.set_inference_dtype(torch.float32, None)
model = model_config.get_model(ldm, conv.UNET_PREFIX, device="cpu")
report["stock_concat_keys"] = list(getattr(model, "concat_keys", ()))
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for name, p in model.diffusion_model.named_parameters():
        if p.ndim == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(torch.ones(p.shape))
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))

vae_d = AutoencoderKL(**cfg["vae"]).eval()
vae_ldm = {}
for k, v in T.invert_table(vae_d.state_dict(), conv.vae_prefix_table(cfg["vae"])).items():
    vae_ldm[k] = v[:, :, None, None] if ".mid.attn_1." in k and k.endswith(".weight") and v.ndim == 2 else v
vae = comfy.sd.VAE(sd=vae_ldm)

pose = torch.zeros(1, 64, 64, 3)
pose[:, 10:54, 28:36] = torch.tensor([0.34, 0.86, 0.5])
pos = [[torch.randn(1, 77, 1024, generator=g), {}]]
neg = [[torch.randn(1, 77, 1024, generator=g), {}]]
latent = torch.zeros(1, 4, 8, 8)
noise = torch.randn(1, 4, 8, 8, generator=g)


def ksample(m):
    return comfy.sample.sample(m, noise, 2, 5.0, "euler", "normal", pos, neg, latent, denoise=1.0,
                               disable_pbar=True, seed=0)


try:
    ksample(patcher)
    report["stock_error"] = None
except Exception as exc:  # noqa: BLE001 - the failure we expect without the patch
    report["stock_error"] = f"{type(exc).__name__}: {exc}"[:300]

node = pack.NODE_CLASS_MAPPINGS["HumanGenHumanSDApplyPose"]()
patched, p_out, n_out = node.apply(patcher, vae, pos, neg, pose)
out = ksample(patched)
report["patched_shape"] = list(out.shape)
report["patched_finite"] = bool(torch.isfinite(out).all())
report["input_model_untouched"] = "model_function_wrapper" not in patcher.model_options

# eps parity: ComfyUI's UNet vs our diffusers UNet built from its LDM weights through our key tables
from humangen.models.humansd.loader import _materialize, _skeleton  # noqa: E402

sd = {k: v for k, v in model.diffusion_model.state_dict().items()}
converted, unmapped = conv.convert_unet(sd, cfg["unet"])
report["unmapped"] = unmapped
ours = _materialize(*_skeleton(lambda: UNet2DConditionModel(**cfg["unet"]), converted, "UNet", "comfy"), "UNet")
x = torch.randn(2, 8, 8, 8, generator=g)
ctx = torch.randn(2, 77, 1024, generator=g)
t = torch.tensor([500, 500])
with torch.no_grad():
    a = model.diffusion_model(x, timesteps=t, context=ctx)
    b = ours(x, t, encoder_hidden_states=ctx).sample
report["eps_max_abs_diff"] = float((a - b).abs().max())
report["eps_scale"] = float(a.abs().mean())
del model, patcher, patched, ours, sd, converted, a, b

# the pack's own sampler node under the ComfyUI host adapter (ModelPatcher memory management, ProgressBar,
# interrupt checks), with a tiny model
import tempfile  # noqa: E402

from humangen.models.humansd.loader import load_humansd  # noqa: E402
from humangen.utils import host  # noqa: E402

report["host"] = type(host.get()).__name__
with tempfile.TemporaryDirectory() as tmp:
    tiny = load_humansd(T.save_ckpt(os.path.join(tmp, "tiny.ckpt"), T.ldm_state_dict(*T.make_components(seed=1))))
sampler = pack.NODE_CLASS_MAPPINGS["HumanGenSkeletonSDSampler"]()
images, skeleton = sampler.sample(tiny, prompt="a person", negative_prompt="", added_prompt="", steps=3,
                                  guidance=3.0, eta=0.0, scheduler="ddim", seed=1, batch=2, short_side=64,
                                  strength=1.0, precision="auto", skeleton=pose)
report["node_images"] = list(images.shape)
report["node_managed"] = all("_humangen_patcher" in m.__dict__  # host.load_model's ModelPatcher
                             for m in (tiny.unet, tiny.vae, tiny.text_encoder))
print(json.dumps(report))
