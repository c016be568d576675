"""Continuous-GAN nodes (UnitedHuman / AnyRes): a canvas of any size rendered patch by patch, and a region of
interest (a keypoint close-up or any HUMANGEN_TRANSFORM) rendered on its own. Logic lives in models/continuous.py
and models/anyres.py; torch/numpy load lazily.

HUMANGEN_TRANSFORM: any object with a `.matrix` attribute holding UnitedHuman's 3×3 patch matrix
[[s, 0, tx/2], [0, s, ty/2], [0, 0, 1]] (normalised canvas coordinates in [-1, 1]; 1/s is the zoom)."""
from __future__ import annotations

CATEGORY = "HumanGen/continuous"
GEN = "HUMANGEN_GENERATOR"
LAT = "HUMANGEN_LATENT"
TRANSFORM = "HUMANGEN_TRANSFORM"
FRAMINGS = ["white_bands", "person", "square"]  # models.continuous.FRAMINGS, upstream's default first
MEAN_MODES = ["sample", "mean_coarse_mix", "sample_and_mix", "only_mean"]  # models.continuous.MEAN_MODES
PRECISIONS = ["fp32", "reduced"]
IMPLS = ["auto", "fast", "ref"]
BODY25 = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
          "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
          "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel",
          "right_big_toe", "right_small_toe", "right_heel"]  # models.continuous.BODY25_NAMES (a test checks)
_NO_MODELS = "(no files in models/unitedhuman)"


def _err(node, name, problem, fix=None):
    from ..utils.errors import NodeInputError
    return NodeInputError(node, name, problem, fix=fix)


def _mean_inputs():
    return {
        "mean_mode": (MEAN_MODES, {"default": "sample", "tooltip": "UnitedHuman's mean options: 'sample' as is; "
                      "'mean_coarse_mix' takes the first `mix_layers` ws from the empirical mean (averaged pose and "
                      "structure, the sample's appearance); 'sample_and_mix' outputs both (upstream's two rows); "
                      "'only_mean' renders the mean latent alone."}),
        "mix_layers": ("INT", {"default": 8, "min": 0, "max": 32, "step": 1,
                               "tooltip": "How many leading ws the mean-coarse mix replaces (upstream: 8 of 16)."}),
        "mean_samples": ("INT", {"default": 10000, "min": 100, "max": 100000, "step": 100,
                                 "tooltip": "Samples for the empirical mean latent (upstream: 10000)."}),
        "mean_seed": ("INT", {"default": 123, "min": 0, "max": 2 ** 32 - 1,
                              "tooltip": "Seed of the empirical-mean samples (upstream: 123)."}),
        "patch_batch": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1,
                                "tooltip": "Patches per generator call (all share the latent). 0 = auto (8 on GPU, "
                                "1 on CPU, where memory matters more than the small speed-up). Halved on "
                                "out-of-memory."}),
    }


def _prepare(node, generator, latent, mean_mode, mix_layers, mean_samples, mean_seed):
    """-> (G, device, ws on the device, synthesis kwargs)."""
    from ..models import continuous as C
    from ..models import gan_latents as gl
    from ..utils import host
    G = getattr(generator, "model", None)
    if G is None or not hasattr(G, "mapping"):
        raise _err(node, "generator", "expected a HUMANGEN_GENERATOR.",
                   fix="connect HumanGenUnitedHumanLoader or HumanGenStyleGANLoader.")
    if getattr(G, "arch", "") != "anyres":
        raise _err(node, "generator", f"'{generator.name}' is a {generator.kind} generator, not a continuous "
                   "(UnitedHuman/AnyRes) one.", fix="load UnitedHuman's network-snapshot-v1.pkl.")
    try:
        ws = gl.to_wplus(generator, latent)
    except ValueError as exc:
        raise _err(node, "latent", str(exc), fix="make the latent with the same generator.") from None
    device = host.load_model(G)
    ws = C.apply_mean_mode(G, ws.to(device), mean_mode, mix_layers, mean_samples, mean_seed)
    kw = {"impl": generator.impl, "dtype": generator.synthesis_dtype(device)}
    return G, device, ws, kw


def _render(G, device, ws, size, patch_batch, kw, region=None, framing="square"):
    """Canvas with progress per patch, interrupt checks and out-of-memory back-off -> IMAGE (upstream's uint8)."""
    from ..models import continuous as C
    from ..utils import host
    host.check_interrupt()
    batch = patch_batch or (8 if getattr(device, "type", str(device)) == "cuda" else 1)
    state = {"bar": None}

    def on_patch(done, total):
        if state["bar"] is None:
            state["bar"] = host.progress(total, desc="continuous patches")
        state["bar"].update_absolute(done)
        host.check_interrupt()

    def run(b):
        state["bar"] = None
        return C.render_canvas(G, ws, size, region=region, framing=framing, patch_batch=b, callback=on_patch,
                               synthesis_kwargs=kw)
    try:
        out = host.run_with_oom_backoff(run, batch, 1, what="patch batch")
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    return C.to_uint8_unitedhuman(out).float() / 255.0


class HumanGenUnitedHumanLoader:
    DESCRIPTION = ("Load UnitedHuman's continuous generator (network-snapshot-v1.pkl; any AnyRes patch model) from "
                   "models/unitedhuman. The pickle is read safely (its embedded code never runs) and cached as "
                   "safetensors. The HumanGen StyleGAN loader reads the same files from models/stylegan.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (GEN,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("The continuous generator (patch size = its img_resolution).",)

    @classmethod
    def INPUT_TYPES(cls):
        from ..utils import host
        files = host.list_models("unitedhuman") or [_NO_MODELS]
        return {"required": {
            "model_name": (files, {"tooltip": "Generator file in models/unitedhuman (.pkl or .safetensors)."}),
            "precision": (PRECISIONS, {"default": "fp32", "tooltip": "fp32 matches the official output; 'reduced' "
                                       "runs bf16 on CPU / fp16 on GPU."}),
            "ops_impl": (IMPLS, {"default": "auto", "tooltip": "Kernel path: fast, ref (reference), or auto."}),
        }, "hidden": {"prompt": "PROMPT"}}

    def load(self, model_name, precision="fp32", ops_impl="auto", prompt=None):
        from ..models import gan_latents as gl, load_generator
        from ..utils import host
        node = "HumanGenUnitedHumanLoader"
        if model_name == _NO_MODELS:
            raise host.missing_model_error("unitedhuman", "network-snapshot-v1.pkl", node=node,
                                           input_name="model_name", prompt=prompt, folder_empty=True)
        from ..utils.errors import HumanGenError, for_input
        path = host.model_path("unitedhuman", model_name, node=node, input_name="model_name", prompt=prompt)
        try:
            G = load_generator(path)
        except HumanGenError as exc:
            raise for_input(exc, node, "model_name", "use UnitedHuman's network-snapshot .pkl.") from exc
        if getattr(G, "arch", "") != "anyres":
            raise _err(node, "model_name", f"{model_name} is a {getattr(G, 'arch', '?')} generator, not a "
                       "continuous (UnitedHuman/AnyRes) one.", fix="use HumanGenStyleGANLoader for it.")
        return (gl.GeneratorDescriptor.from_model(G, model_name, gl.generator_id_for_file(path), dtype=precision,
                                                  impl=ops_impl),)


class HumanGenContinuousRender:
    DESCRIPTION = ("Render a UnitedHuman/AnyRes latent at any canvas size (256, 1024, 2048, 4096, or sizes that are "
                   "not multiples of the patch size), patch by patch with bounded memory, on CPU or GPU. Framing as "
                   "upstream: the person fills the central half of the square canvas.")
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Canvas images [B, H, W, 3] (UnitedHuman's uint8 convention).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "A continuous generator (HumanGenUnitedHumanLoader)."}),
            "latent": (LAT, {"tooltip": "From HumanGenLatentFromSeeds (upstream: ψ 0.8 toward w_avg)."}),
            "canvas_size": ("INT", {"default": 1024, "min": 16, "max": 8192, "step": 1,
                                    "tooltip": "Side of the square canvas in pixels (any size)."}),
            "framing": (FRAMINGS, {"default": "white_bands", "tooltip": "'white_bands': paint the outer quarters "
                        "white (upstream); 'person': return only the central 2:1 strip (faster: the outer "
                        "patches are skipped); 'square': the whole canvas."}),
            **_mean_inputs(),
        }}

    def render(self, generator, latent, canvas_size, framing="white_bands", mean_mode="sample", mix_layers=8,
               mean_samples=10000, mean_seed=123, patch_batch=0):
        from ..models import continuous as C
        from ..utils.limits import check_batch_pixels
        node = "HumanGenContinuousRender"
        G, device, ws, kw = _prepare(node, generator, latent, mean_mode, mix_layers, mean_samples, mean_seed)
        y0, y1, x0, x1 = C.framing_box(int(canvas_size), framing)
        check_batch_pixels(ws.shape[0], x1 - x0, y1 - y0, node, "latent", what="canvases (one per latent)")
        return (_render(G, device, ws, int(canvas_size), int(patch_batch), kw, framing=framing),)


class HumanGenRegionRender:
    DESCRIPTION = ("Render one region of the continuous canvas at full resolution without rendering the rest: a "
                   "close-up on a keypoint of UnitedHuman's A-pose template (face, hands, feet) at a chosen zoom, "
                   "or any HUMANGEN_TRANSFORM (e.g. from the SMPL-X transformer).")
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Region images [B, S, S, 3] (S = output_size).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "A continuous generator (HumanGenUnitedHumanLoader)."}),
            "latent": (LAT, {"tooltip": "The same latent as the full-body render for a matching close-up."}),
            "keypoint": (BODY25, {"default": "nose", "tooltip": "BODY_25 keypoint of the template to centre on "
                         "(ignored when a transform is connected)."}),
            "zoom": ("FLOAT", {"default": 6.0, "min": 0.25, "max": 64.0, "step": 0.25, "tooltip": "Zoom relative "
                     "to the whole canvas: the region is 1/zoom of the canvas side (upstream's face close-up: 6)."}),
            "output_size": ("INT", {"default": 256, "min": 16, "max": 8192, "step": 1, "tooltip": "Output side in "
                            "pixels. The patch size renders one patch; larger sizes tile the region with finer "
                            "patches (more detail)."}),
            **_mean_inputs(),
        }, "optional": {
            "transform": (TRANSFORM, {"tooltip": "A region as UnitedHuman's 3×3 patch matrix (overrides keypoint "
                          "and zoom)."}),
        }}

    def render(self, generator, latent, keypoint="nose", zoom=6.0, output_size=256, mean_mode="sample",
               mix_layers=8, mean_samples=10000, mean_seed=123, patch_batch=0, transform=None):
        from ..models import continuous as C
        node = "HumanGenRegionRender"
        try:
            region = C.as_matrix(transform) if transform is not None else C.keypoint_transform(keypoint, zoom)
        except ValueError as exc:
            if transform is None:
                raise _err(node, "keypoint", str(exc), fix="choose a keypoint from the list.") from None
            raise _err(node, "transform", str(exc),
                       fix="connect a HUMANGEN_TRANSFORM (an object with a 3x3 `.matrix`).") from None
        from ..utils.limits import check_batch_pixels
        regions = region.reshape(-1, 3, 3)  # a TransformList (Part To Canvas on a batch) is [N, 3, 3]
        G, device, ws, kw = _prepare(node, generator, latent, mean_mode, mix_layers, mean_samples, mean_seed)
        check_batch_pixels(max(ws.shape[0], regions.shape[0]), int(output_size), int(output_size), node,
                           "latent" if ws.shape[0] >= regions.shape[0] else "transform", what="regions")
        if regions.shape[0] == 1:
            return (_render(G, device, ws, int(output_size), int(patch_batch), kw, region=regions[0]),)
        if ws.shape[0] not in (1, regions.shape[0]):
            raise _err(node, "transform", f"{regions.shape[0]} transforms for {ws.shape[0]} latents.",
                       fix="give one latent for all transforms or one per transform.")
        # one region per transform, each with its own latent (or the one shared latent)
        import torch
        return (torch.cat([_render(G, device, ws[min(i, ws.shape[0] - 1)][None], int(output_size),
                                   int(patch_batch), kw, region=r) for i, r in enumerate(regions)]),)


NODE_CLASS_MAPPINGS = {
    "HumanGenUnitedHumanLoader": HumanGenUnitedHumanLoader,
    "HumanGenContinuousRender": HumanGenContinuousRender,
    "HumanGenRegionRender": HumanGenRegionRender,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenUnitedHumanLoader": "UnitedHuman Loader (HumanGen)",
    "HumanGenContinuousRender": "Continuous Render (HumanGen)",
    "HumanGenRegionRender": "Region Render (HumanGen)",
}
