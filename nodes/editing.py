"""Latent editing and real-image inversion nodes for StyleGAN-Human (SeFa, S-space edits, projection, PTI).

Logic lives in models/editing.py and models/inversion.py; these classes resolve inputs and convert outputs.
"""
from __future__ import annotations

from .stylegan import synthesize_images  # one rendering path (progress, interrupts, pixel bound) for every node

CATEGORY = "HumanGen/editing"
GEN = "HUMANGEN_GENERATOR"
LAT = "HUMANGEN_LATENT"
DIRS = "HUMANGEN_DIRECTIONS"
_UPSTREAM_FOLDER = "latent_direction/"  # the folder name in the StyleGAN-Human repository
_NO_FILES = "(no files in models/stylegan_directions)"
_NO_ATTRS = "(no ss/<attribute> folders in models/stylegan_directions)"
# the optimisation nodes' precision widget (projection, PTI, InsetGAN); choices are models.inversion.PRECISIONS
PRECISION_INPUT = (["fp32", "bf16"], {"default": "fp32", "tooltip": "fp32: exact (the reference's gradients). bf16: "
                   "the generator's convolutions and LPIPS in bfloat16, latents, weights and losses in float32: "
                   "3-4x faster steps on GPUs and on CPUs with AMX or AVX512-BF16; on other CPUs it is emulated, "
                   "20-50x slower: use fp32 there. The result differs slightly from fp32."})


def _err(node, name, problem, fix=None):
    from ..utils.errors import NodeInputError
    return NodeInputError(node, name, problem, fix=fix)


def _layers(node, text, num_ws, default=None):
    """W+ indices from the `layers` text, else `default` (the ones a direction file stores), checked against the
    generator's num_ws."""
    from ..models import gan_latents as gl
    if not str(text or "").strip():
        if default is not None and not all(0 <= i < num_ws for i in default):
            raise _err(node, "layers", f"empty, so the direction file's own layers {list(default)[:20]} are used, "
                       f"but the generator has only {num_ws} W+ layers.",
                       fix=f"write W+ indices like '4-7' (0..{num_ws - 1}), or use directions made for this "
                       f"generator.")
        return default
    try:
        return gl.parse_layers(text, num_ws)
    except ValueError as exc:
        raise _err(node, "layers", str(exc), fix=f"write W+ indices like '4-7' (0..{num_ws - 1}).") from None


def _wplus_latent(node, generator, latent):
    from ..models import gan_latents as gl
    try:
        return gl.to_wplus(generator, latent)
    except ValueError as exc:
        raise _err(node, "latent", str(exc), fix="make the latent with the same generator.") from None


def _edited(generator, latent, ws, **extra):
    from ..models import gan_latents as gl
    out = gl.make_latent("w+", ws, generator, seeds=latent.get("seeds"), labels=latent.get("labels"),
                         truncation=latent.get("truncation"))
    if latent.get("style_offsets"):
        out["style_offsets"] = dict(latent["style_offsets"])
    out.update(extra)
    return out


def _optimisation_callback(progress):
    from ..utils import host

    def callback(step, total, info):
        host.check_interrupt()
        progress.update_absolute(step)
    return callback


def _target(node, generator, image):
    import torch.nn.functional as F

    from ..utils.image import check_image, comfy_to_nchw
    img = check_image(image, node, "image")
    if img.shape[0] != 1:
        raise _err(node, "image", f"expected one image, got a batch of {img.shape[0]}.",
                   fix="pick one image (e.g. with ImageFromBatch) before inverting it.")
    h, w = int(img.shape[1]), int(img.shape[2])
    if abs(h / w - generator.height / generator.width) > 0.02:
        raise _err(node, "image", f"the image is {w}x{h} but the generator makes {generator.width}x"
                   f"{generator.height} images (aspect {generator.width}:{generator.height}).",
                   fix="align the photo first with HumanGenAlignFullBody (2:1 full body, white background).")
    x = comfy_to_nchw(img.float())
    if (h, w) != (generator.height, generator.width):
        x = F.interpolate(x, size=(generator.height, generator.width), mode="area")
    return x


def checked_precision(node, precision):
    """`precision` if it is a choice of PRECISION_INPUT, else a NodeInputError naming the node's input."""
    if precision not in PRECISION_INPUT[0]:
        raise _err(node, "precision", f"unknown precision {precision!r}.", fix=f"use one of {PRECISION_INPUT[0]}.")
    return precision


def _lpips(node, net, generator=None, prompt=None):
    from ..models.lpips import load_lpips
    from ..utils import host
    from ..utils.errors import HumanGenError, for_input
    host.require_files(node, {"lpips_net": net}, prompt)
    try:
        model = load_lpips(net, host.model_dirs("lpips"))
    except HumanGenError as exc:
        raise for_input(exc, node, "lpips_net") from exc
    if generator is not None and min(generator.height, generator.width) < model.min_side():
        raise _err(node, "lpips_net", f"the {net} backbone needs images at least {model.min_side()} pixels on each "
                   f"side, but the generator makes {generator.width}x{generator.height} images.",
                   fix="choose the other LPIPS backbone, or a larger generator.")
    return model


class HumanGenSeFaDirections:
    DESCRIPTION = ("Closed-form SeFa: semantic directions in W from the generator's own weights (eigenvectors of the "
                   "stacked conv affine weights of the chosen W+ layers), instant, no sampling. StyleGAN2 and 3.")
    CATEGORY = CATEGORY
    FUNCTION = "discover"
    RETURN_TYPES = (DIRS,)
    RETURN_NAMES = ("directions",)
    OUTPUT_TOOLTIPS = ("k unit directions in W, strongest first.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The generator whose style affines give the SeFa directions (from HumanGen "
                                           "StyleGAN Loader)."}),
            "layers": ("STRING", {"default": "4-7", "tooltip": "W+ indices whose layers are factorised "
                                  "(StyleGAN-Human ships directions for 4-7); empty = all conv layers."}),
            "num_directions": ("INT", {"default": 10, "min": 1, "max": 512, "step": 1,
                                       "tooltip": "How many directions to keep (sorted by eigenvalue)."}),
            "normalize_rows": ("BOOLEAN", {"default": False, "tooltip": "Normalise each affine row to unit norm "
                                           "first (genforce's convention; rosinality's does not)."}),
        }}

    def discover(self, generator, layers="4-7", num_directions=10, normalize_rows=False):
        from ..models.editing import sefa
        from ..utils.errors import HumanGenError
        node = "HumanGenSeFaDirections"
        idx = _layers(node, layers, generator.num_ws)
        try:
            return (sefa(generator.model, idx, num_directions=num_directions, normalize_rows=normalize_rows),)
        except HumanGenError as exc:  # layers that feed no conv layer (e.g. the last W+ indices of StyleGAN2)
            raise _err(node, "layers", str(exc).removeprefix("SeFa: "),
                       fix="choose W+ indices that feed conv layers, e.g. '4-7', or leave empty for all.") from None


class HumanGenLoadDirections:
    DESCRIPTION = ("Load W-space direction vectors from models/stylegan_directions: StyleGAN-Human's shipped SeFa "
                   ".pt files (e.g. latent_direction/sefa/upper_length.pt), .npy arrays or our .safetensors.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (DIRS,)
    RETURN_NAMES = ("directions",)
    OUTPUT_TOOLTIPS = ("The directions in the file (named after the file for single vectors).",)

    @classmethod
    def INPUT_TYPES(cls):
        from ..utils import host
        # StyleGAN-Human's latent_direction/ may be copied as a folder or as its contents: one name for both, so
        # a workflow saved with one layout runs with the other
        files = sorted({f.removeprefix(_UPSTREAM_FOLDER) for f in host.list_models("stylegan_directions")
                        if not f.endswith(".pkl")}) or [_NO_FILES]
        return {"required": {"file": (files, {"tooltip": "Direction file in models/stylegan_directions."})},
                "hidden": {"prompt": "PROMPT"}}

    def load(self, file, prompt=None):
        from ..models.editing import load_directions
        from ..utils import host
        node = "HumanGenLoadDirections"
        if file == _NO_FILES:
            raise host.missing_model_error("stylegan_directions", "sefa/upper_length.pt", node=node, input_name="file",
                                           prompt=prompt, folder_empty=True)
        from ..utils.errors import HumanGenError, for_input
        path = host.model_path("stylegan_directions", file, node=node, input_name="file", prompt=prompt,
                               alternatives=(_UPSTREAM_FOLDER + file,))
        try:
            return (load_directions(path),)
        except HumanGenError as exc:
            raise for_input(exc, node, "file", "use a direction file from StyleGAN-Human's latent_direction/ "
                            "folder, a .npy of float vectors, or one saved by HumanGen.") from exc


def _moved_along(node, generator, latent, directions, direction, strengths, layers):
    """The latent's ws moved along one direction at each strength (HumanGenApplyDirection's edit), stacked:
    [len(strengths) * items, num_ws, w_dim]. Errors name `node` and the input at fault."""
    import torch

    from ..models.editing import apply_direction
    from ..utils.errors import HumanGenError
    ws = _wplus_latent(node, generator, latent)
    idx = _layers(node, layers, generator.num_ws, default=directions.layers)
    try:
        vec = directions.pick(direction.strip())
    except HumanGenError as exc:
        raise _err(node, "direction", str(exc), fix="give an index (0 = strongest) or one of the names.") from None
    if vec.numel() != generator.w_dim:
        raise _err(node, "directions", f"the directions have {vec.numel()} values but the generator's w_dim is "
                   f"{generator.w_dim}.", fix="use directions made for this generator.")
    return torch.cat([apply_direction(ws, vec, s, idx) for s in strengths])


class HumanGenApplyDirection:
    DESCRIPTION = ("Move a latent along a W direction on the chosen W+ layers: w_l += strength · n. "
                   "StyleGAN-Human's edit.py uses w_l += 2·α·n on layers 4-7, so its α = 5 is strength 10 here.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = (LAT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The edited latent (w+).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The StyleGAN generator (from StyleGAN Loader (HumanGen))."}),
            "latent": (LAT, {"tooltip": "The latent to edit (W or W+; z is mapped first)."}),
            "directions": (DIRS, {"tooltip": "Directions from SeFa Directions or Load Latent Directions."}),
            "direction": ("STRING", {"default": "0", "tooltip": "Index (0 = strongest) or name of the direction."}),
            "strength": ("FLOAT", {"default": 5.0, "min": -100.0, "max": 100.0, "step": 0.5,
                                   "tooltip": "Distance to move along the direction (0 = unchanged). For "
                                   "StyleGAN-Human's garment-length vectors, negative = longer."}),
            "layers": ("STRING", {"default": "", "tooltip": "W+ indices to edit, e.g. '4-7'; empty = the layers "
                                  "the directions were computed for (all layers for loaded files)."}),
        }}

    def apply(self, generator, latent, directions, direction="0", strength=5.0, layers=""):
        node = "HumanGenApplyDirection"
        ws = _moved_along(node, generator, latent, directions, direction, [float(strength)], layers)
        return (_edited(generator, latent, ws),)


class HumanGenStyleSpaceEdit:
    DESCRIPTION = ("Edit in style space (the per-layer conv affine outputs) with StyleGAN-Human's shipped vectors "
                   "(models/stylegan_directions/ss/<attribute>/style_vect_mean_<l>.pkl): 'all_layers' adds "
                   "strength·vector on every shipped layer (their 'InterFaceGAN'); 'one_layer' edits one layer, "
                   "only the channels whose ss_statics strength exceeds the threshold (StyleSpace).")
    CATEGORY = CATEGORY
    FUNCTION = "edit"
    RETURN_TYPES = (LAT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent carrying the style-space edit (renderers apply it).",)

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.editing import stylespace_attributes
        from ..utils import host
        attrs = stylespace_attributes(host.model_dirs("stylegan_directions")) or [_NO_ATTRS]
        return {"required": {
            "generator": (GEN, {"tooltip": "The StyleGAN generator (from StyleGAN Loader (HumanGen))."}),
            "latent": (LAT, {"tooltip": "The latent to edit; the style-space offsets travel with it to StyleGAN "
                                        "Synthesize."}),
            "attribute": (attrs, {"tooltip": "Attribute folder under models/stylegan_directions/ss/ "
                                  "(StyleGAN-Human ships upper_length and bottom_length)."}),
            "method": (["all_layers", "one_layer"], {"default": "all_layers", "tooltip": "all_layers: every "
                       "shipped S layer; one_layer: one layer, masked channels (StyleSpace)."}),
            "strength": ("FLOAT", {"default": -1.0, "min": -50.0, "max": 50.0, "step": 0.1,
                                   "tooltip": "α. Upstream: upper_length −1 (shorter), bottom_length +1 for "
                                   "all_layers; −5 / +5 for one_layer."}),
            "layer": ("INT", {"default": 5, "min": 0, "max": 31, "step": 1,
                              "tooltip": "S index for one_layer (upstream: upper_length 5, bottom_length 3)."}),
            "threshold": ("FLOAT", {"default": 0.0028, "min": 0.0, "max": 1.0, "step": 0.0001,
                                    "tooltip": "Channel mask |strength| > threshold for one_layer "
                                    "(upstream 0.0028 upper_length, 0.003 bottom_length)."}),
        }, "hidden": {"prompt": "PROMPT"}}

    def edit(self, generator, latent, attribute, method="all_layers", strength=-1.0, layer=5, threshold=0.0028,
             prompt=None):
        from ..models import editing
        from ..utils import host
        from ..utils.errors import HumanGenError
        node = "HumanGenStyleSpaceEdit"
        if attribute == _NO_ATTRS:
            raise _err(node, "attribute", "no style-space vectors found.", fix="copy StyleGAN-Human's "
                       "latent_direction/ss and latent_direction/ss_statics into models/stylegan_directions.")
        known = editing.stylespace_attributes(host.model_dirs("stylegan_directions"))
        if attribute not in known:  # a value from a workflow or a link is a name, never a path
            raise _err(node, "attribute", f"{str(attribute)[:80]!r} is not an attribute folder in "
                       f"models/stylegan_directions/ss ({', '.join(known[:8]) or 'none found'}).",
                       fix="choose one of the listed attributes.")
        _wplus_latent(node, generator, latent)  # validates the latent against the generator
        if method == "one_layer":  # all_layers takes whichever vectors the generator has layers for
            host.require_files(node, {"attribute": attribute, "method": method, "layer": layer}, prompt)
        try:
            offsets = editing.stylespace_offsets(generator.model, host.model_dirs("stylegan_directions"), attribute,
                                                 method, float(strength), int(layer), float(threshold))
        except HumanGenError as exc:
            raise _err(node, "attribute" if method == "all_layers" else "layer", str(exc),
                       fix="use StyleGAN-Human's latent_direction/ss and ss_statics files, unchanged, with the "
                       "generator they were computed for.") from None
        merged = dict(latent.get("style_offsets") or {})
        for name, ds in offsets.items():
            merged[name] = merged[name] + ds if name in merged else ds
        out = dict(latent)
        out["style_offsets"] = merged
        return (out,)


class HumanGenDirectionSweep:
    DESCRIPTION = "Render one latent moved along one direction at N strengths from a to b: an IMAGE batch and a grid."
    CATEGORY = CATEGORY
    FUNCTION = "sweep"
    RETURN_TYPES = ("IMAGE", "IMAGE", LAT)
    RETURN_NAMES = ("images", "grid", "latents")
    OUTPUT_TOOLTIPS = ("One image per strength.", "The images side by side, labelled with their strength.",
                       "The edited latents.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The StyleGAN generator (from StyleGAN Loader (HumanGen))."}),
            "latent": (LAT, {"tooltip": "The latent to move along the direction (the first item is used)."}),
            "directions": (DIRS, {"tooltip": "Directions from SeFa Directions or Load Latent Directions."}),
            "direction": ("STRING", {"default": "0", "tooltip": "Index (0 = strongest) or name of the direction."}),
            "strength_from": ("FLOAT", {"default": -10.0, "min": -100.0, "max": 100.0, "step": 0.5,
                                        "tooltip": "First strength."}),
            "strength_to": ("FLOAT", {"default": 10.0, "min": -100.0, "max": 100.0, "step": 0.5,
                                      "tooltip": "Last strength."}),
            "steps": ("INT", {"default": 5, "min": 2, "max": 64, "step": 1, "tooltip": "Number of strengths."}),
            "layers": ("STRING", {"default": "", "tooltip": "W+ indices to edit; empty = the directions' own."}),
        }}

    def sweep(self, generator, latent, directions, direction="0", strength_from=-10.0, strength_to=10.0, steps=5,
              layers=""):
        import numpy as np
        import torch

        from ..models import gan_latents as gl
        from ..utils.image import gan_to_comfy, gan_to_uint8, uint8_to_comfy
        node = "HumanGenDirectionSweep"
        strengths = torch.linspace(float(strength_from), float(strength_to), int(steps)).tolist()
        one = dict(latent, tensor=latent["tensor"][:1])
        ws = _moved_along(node, generator, one, directions, direction, strengths, layers)
        imgs = synthesize_images(node, "steps", generator, ws, style_offsets=latent.get("style_offsets"))
        labelled = [gl.label_image(a, f"{s:+.1f}") for a, s in zip(gan_to_uint8(imgs).numpy(), strengths)]
        grid = uint8_to_comfy(np.concatenate(labelled, axis=1))
        out = _edited(generator, latent, ws, labels=[f"{node}:{s:+.2f}" for s in strengths])
        return (gan_to_comfy(imgs), grid, out)


class HumanGenProjectImage:
    DESCRIPTION = ("Invert an aligned full-body photo into the generator's W or W+ space by optimisation "
                   "(StyleGAN-Human's projector: lr ramp-up 5% / cosine down 25%, W noise schedule, noise "
                   "regularisation with renormalisation) with an LPIPS distance. Deterministic for a seed.")
    CATEGORY = CATEGORY
    FUNCTION = "project"
    RETURN_TYPES = (LAT, "IMAGE")
    RETURN_NAMES = ("latent", "reconstruction")
    OUTPUT_TOOLTIPS = ("The projected latent (w+ layout).", "The generator's rendering of it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The generator to invert into (its W statistics start the search)."}),
            "image": ("IMAGE", {"tooltip": "One aligned image with the generator's aspect (2:1 for StyleGAN-Human)."}),
            "space": (["w", "w+"], {"default": "w", "tooltip": "w: one vector for all layers (upstream default, "
                      "edits well); w+: one per layer (closer fit)."}),
            "steps": ("INT", {"default": 450, "min": 1, "max": 5000, "step": 10, "tooltip": "Optimisation steps."}),
            "learning_rate": ("FLOAT", {"default": 0.01, "min": 1e-5, "max": 1.0, "step": 0.001,
                                        "tooltip": "Peak learning rate (upstream's effective 0.01)."}),
            "noise_regularization": ("FLOAT", {"default": 1e5, "min": 0.0, "max": 1e7, "step": 1e4,
                                               "tooltip": "Weight of the noise autocorrelation penalty."}),
            "lpips_net": (["vgg", "alex"], {"default": "vgg", "tooltip": "LPIPS backbone (weights from "
                          "models/lpips: vgg16-397923af.pth or alexnet-owt-7be5be79.pth)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": True,
                             "tooltip": "Seed of the noise initialisation and W noise."}),
        }, "optional": {"precision": PRECISION_INPUT}, "hidden": {"prompt": "PROMPT"}}

    def project(self, generator, image, space="w", steps=450, learning_rate=0.01, noise_regularization=1e5,
                lpips_net="vgg", seed=0, precision="fp32", prompt=None):
        from ..models.inversion import ProjectionConfig, project, warn_if_emulated
        from ..utils import host
        from ..utils.image import gan_to_comfy
        node = "HumanGenProjectImage"
        target = _target(node, generator, image)
        distance = _lpips(node, lpips_net, generator, prompt)
        cfg = ProjectionConfig(num_steps=int(steps), space=space, learning_rate=float(learning_rate),
                               regularize_noise_weight=float(noise_regularization), seed=int(seed),
                               precision=checked_precision(node, precision))
        device = host.load_model(generator.model)
        distance.to(device)
        warn_if_emulated(cfg.precision, device, node)
        with host.progress(cfg.num_steps, desc="Projecting") as bar:
            result = project(generator.model, target.to(device), distance, cfg, callback=_optimisation_callback(bar))
        latent = _edited(generator, {"labels": ["projected"]}, result.ws)
        return (latent, gan_to_comfy(synthesize_images(node, "image", generator, result.ws)))


def _pti_save_path(save_name) -> str | None:
    """Where HumanGenPTI saves the tuned generator (models/stylegan/<save_name>.safetensors), None when save_name
    is empty; refused: a name outside the folder, no name before the extension, an existing file."""
    import os

    from ..utils import host
    from ..utils.paths import confine
    node = "HumanGenPTI"
    if not isinstance(save_name, str):
        raise _err(node, "save_name", f"expects text, got {type(save_name).__name__}.", fix="give a name or nothing.")
    name = save_name.strip()
    if not name:
        return None
    name = name if name.endswith(".safetensors") else name + ".safetensors"
    if not os.path.basename(name)[:-len(".safetensors")].strip():  # '.safetensors' alone: a hidden file
        raise _err(node, "save_name", f"{save_name!r} has no name before .safetensors.",
                   fix="give a name such as 'me_pti'.")
    save_path = str(confine(host.model_dirs("stylegan")[0], name, node=node, input_name="save_name"))
    if os.path.exists(save_path):
        raise _err(node, "save_name", f"{save_path} already exists.", fix="choose another name.")
    return save_path


class HumanGenPTI:
    DESCRIPTION = ("Pivotal tuning: fine-tune a copy of the generator around a pivot latent so it reproduces the "
                   "photo (Adam, MSE + LPIPS, early stop). The tuned generator stays in memory; optionally saved as "
                   ".safetensors in models/stylegan (never as a pickle). The input generator is not changed.")
    CATEGORY = CATEGORY
    FUNCTION = "tune"
    RETURN_TYPES = (GEN, "IMAGE")
    RETURN_NAMES = ("generator", "reconstruction")
    OUTPUT_TOOLTIPS = ("The tuned generator (use it with the same latent for edits).", "Its rendering of the pivot.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The generator to tune; a copy is tuned, the input stays unchanged."}),
            "latent": (LAT, {"tooltip": "The pivot, e.g. from HumanGenProjectImage."}),
            "image": ("IMAGE", {"tooltip": "The photo the pivot was projected from."}),
            "steps": ("INT", {"default": 350, "min": 1, "max": 5000, "step": 10, "tooltip": "Maximum steps."}),
            "learning_rate": ("FLOAT", {"default": 5e-4, "min": 1e-6, "max": 0.1, "step": 1e-4,
                                        "tooltip": "Adam learning rate (upstream 5e-4)."}),
            "lpips_threshold": ("FLOAT", {"default": 0.04, "min": 0.0, "max": 1.0, "step": 0.01,
                                          "tooltip": "Stop once LPIPS falls to this value (upstream 0.04)."}),
            "lpips_net": (["alex", "vgg"], {"default": "alex", "tooltip": "LPIPS backbone (upstream PTI: alex)."}),
            "save_name": ("STRING", {"default": "", "tooltip": "If set, also save the tuned generator as "
                                     "models/stylegan/<save_name>.safetensors (never overwrites)."}),
        }, "optional": {"precision": PRECISION_INPUT}, "hidden": {"prompt": "PROMPT"}}

    @classmethod
    def VALIDATE_INPUTS(cls, save_name=None):
        """save_name is checked before the tuning (minutes) starts; a link's value is checked when the node runs."""
        from ..utils.errors import HumanGenError
        try:
            _pti_save_path(save_name if save_name is not None else "")
        except HumanGenError as exc:
            return str(exc)
        return True

    def tune(self, generator, latent, image, steps=350, learning_rate=5e-4, lpips_threshold=0.04, lpips_net="alex",
             save_name="", precision="fp32", prompt=None):
        from ..models import gan_latents as gl
        from ..models.inversion import PTIConfig, pivotal_tuning, warn_if_emulated
        from ..utils import checkpoints, host
        from ..utils.image import gan_to_comfy
        node = "HumanGenPTI"
        save_path = _pti_save_path(save_name)
        ws = _wplus_latent(node, generator, latent)
        if ws.shape[0] != 1:
            raise _err(node, "latent", f"expected one pivot latent, got {ws.shape[0]}.")
        target = _target(node, generator, image)
        lp = _lpips(node, lpips_net, generator, prompt)
        device = host.load_model(generator.model)
        lp.to(device)
        cfg = PTIConfig(max_steps=int(steps), learning_rate=float(learning_rate),
                        lpips_threshold=float(lpips_threshold),
                        precision=checked_precision(node, precision))
        warn_if_emulated(cfg.precision, device, node)
        with host.progress(cfg.max_steps, desc="Pivotal tuning") as bar:
            result = pivotal_tuning(generator.model, ws, target.to(device), lp, cfg,
                                    callback=_optimisation_callback(bar))
        import hashlib
        digest = hashlib.sha1(ws.numpy().tobytes() + target.numpy().tobytes()).hexdigest()[:8]
        gid = f"{generator.generator_id}+pti:{digest}"
        tuned = gl.GeneratorDescriptor.from_model(result.generator, f"{generator.name} (PTI)", gid,
                                                  dtype=generator.dtype, impl=generator.impl)
        if save_path:  # written exclusively: a file that appeared while tuning is not replaced either
            from ..utils.errors import HumanGenError, for_input
            try:
                checkpoints.save_generator(result.generator, save_path, node=node)
            except HumanGenError as exc:
                raise for_input(exc, node, "save_name", "choose another name.") from exc
        return (tuned, gan_to_comfy(synthesize_images(node, "latent", tuned, ws)))


NODE_CLASS_MAPPINGS = {
    "HumanGenSeFaDirections": HumanGenSeFaDirections,
    "HumanGenLoadDirections": HumanGenLoadDirections,
    "HumanGenApplyDirection": HumanGenApplyDirection,
    "HumanGenStyleSpaceEdit": HumanGenStyleSpaceEdit,
    "HumanGenDirectionSweep": HumanGenDirectionSweep,
    "HumanGenProjectImage": HumanGenProjectImage,
    "HumanGenPTI": HumanGenPTI,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenSeFaDirections": "SeFa Directions (HumanGen)",
    "HumanGenLoadDirections": "Load Latent Directions (HumanGen)",
    "HumanGenApplyDirection": "Apply Latent Direction (HumanGen)",
    "HumanGenStyleSpaceEdit": "Style-Space Edit (HumanGen)",
    "HumanGenDirectionSweep": "Direction Sweep (HumanGen)",
    "HumanGenProjectImage": "Project Image to Latent (HumanGen)",
    "HumanGenPTI": "Pivotal Tuning (HumanGen)",
}
