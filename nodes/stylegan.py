"""StyleGAN sampling nodes: load a generator, latents from seeds, synthesize, style mixing, interpolation, and PNGs
that carry their latent. Logic lives in models/gan_latents.py, models/gan_registry.py and utils/checkpoints.py;
torch/numpy load lazily."""
from __future__ import annotations

from ..utils.limits import MAX_LATENT_ITEMS, check_batch_pixels

CATEGORY = "HumanGen/stylegan"
GEN = "HUMANGEN_GENERATOR"
LAT = "HUMANGEN_LATENT"
PRECISIONS = ["fp32", "reduced"]
IMPLS = ["auto", "fast", "ref"]
NOISE_MODES = ["const", "random", "none"]
_NO_MODELS = "(no files in models/stylegan)"


def _err(node, name, problem, fix=None):
    from ..utils.errors import NodeInputError
    return NodeInputError(node, name, problem, fix=fix)


def _seed_list(node, seed, seeds):
    from ..models import gan_latents as gl
    if not str(seeds or "").strip():
        return [int(seed)]
    try:
        return gl.parse_seeds(seeds)
    except ValueError as exc:
        raise _err(node, "seeds", str(exc), fix="write seeds like '1,3,5-8', or leave empty to use 'seed'.") from None


def _wplus(node, name, gen, latent):
    from ..models import gan_latents as gl
    try:
        return gl.to_wplus(gen, latent)
    except ValueError as exc:
        raise _err(node, name, str(exc), fix="make the latent with the same generator.") from None


def synthesize_images(node, input_name, gen, ws, noise_mode="const", batch_size=4, noise_seed=0,
                      style_offsets=None):
    """Render w+ `ws` with a progress bar and interrupt checks (every StyleGAN node that renders); the batch's
    pixels are bounded first (utils.limits.check_batch_pixels, naming `input_name`)."""
    from ..models import gan_latents as gl
    from ..utils import host
    check_batch_pixels(ws.shape[0], gen.width, gen.height, node, input_name)
    device = host.load_model(gen.model)
    bar = host.progress(ws.shape[0], desc="StyleGAN synthesis")
    try:
        return gl.synthesize(gen, ws, noise_mode=noise_mode, batch_size=batch_size, device=device,
                             noise_seed=noise_seed, on_batch=lambda done, total: bar.update_absolute(done),
                             check_interrupt=host.check_interrupt, style_offsets=style_offsets)
    finally:
        bar.close()


class HumanGenStyleGANLoader:
    DESCRIPTION = ("Load a StyleGAN2/StyleGAN3 generator (StyleGAN-Human v2/v3, NVIDIA network pickles, PTI outputs, "
                   ".safetensors) from models/stylegan. Pickles are read safely (embedded code never runs) and "
                   "cached as safetensors.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (GEN,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("The generator with its resolution, latent sizes and id.",)

    @classmethod
    def INPUT_TYPES(cls):
        from ..utils import host
        files = host.list_models("stylegan") or [_NO_MODELS]
        return {"required": {
            "model_name": (files, {"tooltip": "Generator file in models/stylegan (.pkl, .safetensors, .pt)."}),
            "precision": (PRECISIONS, {"default": "fp32", "tooltip": "fp32 matches the official output; 'reduced' "
                                       "runs bf16 on CPU / fp16 on GPU (faster, PSNR ~40 dB)."}),
            "ops_impl": (IMPLS, {"default": "auto", "tooltip": "Kernel path: fast (fused), ref (plain reference), "
                                 "auto (fast unless HUMANGEN_OPS_IMPL says otherwise)."}),
        }, "hidden": {"prompt": "PROMPT"}}

    def load(self, model_name, precision="fp32", ops_impl="auto", prompt=None):
        from ..models import gan_latents as gl, load_generator
        from ..utils import host
        node = "HumanGenStyleGANLoader"
        if model_name == _NO_MODELS:
            raise host.missing_model_error("stylegan", "stylegan_human_v2_1024.pkl", node=node, input_name="model_name",
                                           prompt=prompt, folder_empty=True)
        from ..utils.errors import HumanGenError, for_input
        path = host.model_path("stylegan", model_name, node=node, input_name="model_name", prompt=prompt)
        try:
            G = load_generator(path)
        except HumanGenError as exc:
            raise for_input(exc, node, "model_name", "use a StyleGAN2/StyleGAN3 generator file (StyleGAN-Human "
                            "v2/v3 .pkl, or a .safetensors saved by HumanGen).") from exc
        gid = gl.generator_id_for_file(path)
        return (gl.GeneratorDescriptor.from_model(G, model_name, gid, dtype=precision, impl=ops_impl),)


class HumanGenLatentFromSeeds:
    DESCRIPTION = ("Latents from seeds exactly as upstream (np.random.RandomState(seed).randn), mapped and truncated "
                   "toward w_avg or the empirical mean of N mapped samples.")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (LAT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("One latent per seed (space z, w or w+).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The generator the seeds are mapped with (from StyleGAN Loader "
                                           "(HumanGen))."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": True,
                             "tooltip": "Seed used when 'seeds' is empty."}),
            "seeds": ("STRING", {"default": "", "multiline": False,
                                 "tooltip": "Several seeds, e.g. '1,3,5-8' (overrides 'seed' when not empty)."}),
            "truncation_psi": ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05,
                                         "tooltip": "Truncation ψ: 1 = none, 0.7 = typical, 0 = the centre."}),
            "truncation_cutoff": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1,
                                          "tooltip": "Truncate only the first N ws (0 = all layers)."}),
            "truncation_center": (["w_avg", "empirical_mean"], {"default": "w_avg", "tooltip": "Centre of the "
                                  "truncation: the w_avg buffer, or the mean of N mapped samples."}),
            "mean_samples": ("INT", {"default": 10000, "min": 100, "max": 100000, "step": 100,
                                     "tooltip": "Samples for the empirical mean."}),
            "mean_seed": ("INT", {"default": 123, "min": 0, "max": 2 ** 32 - 1,
                                  "tooltip": "Seed of the empirical-mean samples (upstream uses 123)."}),
            "space": (["w+", "w", "z"], {"default": "w+", "tooltip": "Output space: w+ (mapped, per layer), w, or "
                      "z (mapped later with this truncation)."}),
        }}

    def make(self, generator, seed, seeds="", truncation_psi=1.0, truncation_cutoff=0, truncation_center="w_avg",
             mean_samples=10000, mean_seed=123, space="w+"):
        from ..models import gan_latents as gl
        node = "HumanGenLatentFromSeeds"
        seed_list = _seed_list(node, seed, seeds)
        # checked here so each error names the input at fault (not guessed from the message text)
        if space == "w" and truncation_cutoff:
            raise _err(node, "truncation_cutoff", "a truncation cutoff makes the ws differ per layer, which space "
                       "'w' cannot hold.", fix="set truncation_cutoff to 0, or choose space 'w+'.")
        if truncation_center == "w_avg" and not hasattr(generator.model.mapping, "w_avg"):
            raise _err(node, "truncation_center", "this generator has no w_avg buffer.",
                       fix="choose 'empirical_mean'.")
        if generator.c_dim > 0 and space != "z":
            raise _err(node, "generator", "conditional generators need a class label, which the seed nodes do not "
                       "support yet.", fix="use an unconditional generator (StyleGAN-Human is one).")
        try:
            lat = gl.latent_from_seeds(generator, seed_list, truncation_psi, truncation_cutoff or None,
                                       truncation_center, mean_samples, mean_seed, space)
        except ValueError as exc:
            raise _err(node, "space", str(exc)) from None
        return (lat,)


class HumanGenStyleGANSynthesize:
    DESCRIPTION = "Render latents with a StyleGAN generator into an IMAGE batch (NVIDIA's uint8 rounding)."
    CATEGORY = CATEGORY
    FUNCTION = "synthesize"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Images [B, H, W, 3] in [0, 1].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The StyleGAN generator (from StyleGAN Loader (HumanGen))."}),
            "latent": (LAT, {"tooltip": "The latent(s) to render (z, w or w+; style-space edits travel with it)."}),
            "noise_mode": (NOISE_MODES, {"default": "const", "tooltip": "StyleGAN2 per-pixel noise: const (the "
                           "stored noise, reproducible), random, none. StyleGAN3 ignores it."}),
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 64, "step": 1,
                                   "tooltip": "Images per forward pass (bounds memory)."}),
        }, "optional": {
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1, "control_after_generate": True,
                                   "tooltip": "Seed of the random noise (noise_mode 'random')."}),
        }}

    def synthesize(self, generator, latent, noise_mode="const", batch_size=4, noise_seed=0):
        from ..utils.image import gan_to_comfy
        ws = _wplus("HumanGenStyleGANSynthesize", "latent", generator, latent)
        return (gan_to_comfy(synthesize_images("HumanGenStyleGANSynthesize", "latent", generator, ws, noise_mode,
                                               batch_size, noise_seed, latent.get("style_offsets"))),)


class HumanGenStyleMix:
    DESCRIPTION = ("Style mixing: each row latent takes the column latent's ws at the chosen layers. Outputs the "
                   "mixed latents (row-major) and a labelled grid.")
    CATEGORY = CATEGORY
    FUNCTION = "mix"
    RETURN_TYPES = (LAT, "IMAGE")
    RETURN_NAMES = ("mixed_latent", "grid")
    OUTPUT_TOOLTIPS = ("Rows x cols mixed latents in w+ (row-major).",
                       "Grid: top row = columns, left column = rows (a 1x1 black image when make_grid is off).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The StyleGAN generator (from StyleGAN Loader (HumanGen))."}),
            "row_latent": (LAT, {"tooltip": "Latents of the rows (they keep their fine styles)."}),
            "col_latent": (LAT, {"tooltip": "Latents of the columns (they give the coarse styles of the mixed "
                                            "layers)."}),
            "layers": ("STRING", {"default": "0-6", "tooltip": "w indices taken from the column latent, e.g. "
                                  "'0-6' (coarse: pose/shape) or '8-15' (fine: colour/texture)."}),
            "make_grid": ("BOOLEAN", {"default": True, "tooltip": "Also render the labelled grid."}),
            "noise_mode": (NOISE_MODES, {"default": "const", "tooltip": "Noise for the grid rendering."}),
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 64, "step": 1,
                                   "tooltip": "Images per forward pass."}),
        }}

    def mix(self, generator, row_latent, col_latent, layers="0-6", make_grid=True, noise_mode="const", batch_size=4):
        import torch
        from ..models import gan_latents as gl
        from ..utils.image import gan_to_uint8, uint8_to_comfy
        node = "HumanGenStyleMix"
        rows = _wplus(node, "row_latent", generator, row_latent)
        cols = _wplus(node, "col_latent", generator, col_latent)
        try:
            idx = gl.parse_layers(layers, generator.num_ws)
        except ValueError as exc:
            raise _err(node, "layers", str(exc), fix=f"use indices 0..{generator.num_ws - 1}, e.g. '0-6'.") from None
        R, C = rows.shape[0], cols.shape[0]
        if R * C > MAX_LATENT_ITEMS:
            raise _err(node, "col_latent", f"{R} rows x {C} columns make {R * C} mixed latents; at most "
                       f"{MAX_LATENT_ITEMS} are made at once.", fix="use fewer row or column seeds.")
        if make_grid:  # the grid holds R + 1 rows and C + 1 columns of images
            check_batch_pixels(1, (C + 1) * generator.width, (R + 1) * generator.height, node, "make_grid",
                               what="grid image")
        mixed = gl.style_mix(rows, cols, idx)
        rl = row_latent.get("labels") or [str(i) for i in range(rows.shape[0])]
        cl = col_latent.get("labels") or [str(i) for i in range(cols.shape[0])]
        out = gl.make_latent("w+", mixed, generator, labels=[f"{r}x{c}" for r in rl for c in cl])
        if not make_grid:
            return (out, torch.zeros([1, 1, 1, 3]))
        imgs = gan_to_uint8(synthesize_images(node, "row_latent", generator, torch.cat([rows, cols, mixed]),
                                              noise_mode, batch_size)).numpy()
        grid = gl.mixing_grid(imgs[:R], imgs[R:R + C], imgs[R + C:], rl, cl)
        return (out, uint8_to_comfy(grid))


class HumanGenLatentInterpolate:
    DESCRIPTION = ("Interpolate from latent A to latent B (or through all items of A) in Z, W or W+, lerp or slerp, "
                   "N frames per segment; frame 0 is A, the last is B.")
    CATEGORY = CATEGORY
    FUNCTION = "interpolate"
    RETURN_TYPES = (LAT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The frames as one latent batch.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": (GEN, {"tooltip": "The StyleGAN generator (from StyleGAN Loader (HumanGen))."}),
            "latent_a": (LAT, {"tooltip": "Start latent A (frame 0); with through_all, every item of A in turn."}),
            "frames": ("INT", {"default": 16, "min": 2, "max": 1000, "step": 1,
                               "tooltip": "Frames per segment (including both ends)."}),
            "method": (["lerp", "slerp"], {"default": "lerp", "tooltip": "Linear or spherical interpolation."}),
            "space": (["w+", "w", "z"], {"default": "w+", "tooltip": "Where to interpolate; 'z' needs z "
                      "latents (from seeds) and maps each frame with their truncation."}),
        }, "optional": {
            "latent_b": (LAT, {"tooltip": "End latent; without it, the path goes through the items of latent_a."}),
        }}

    def interpolate(self, generator, latent_a, frames=16, method="lerp", space="w+", latent_b=None):
        from ..models import gan_latents as gl
        import torch
        node = "HumanGenLatentInterpolate"
        given = [(name, lat) for name, lat in (("latent_a", latent_a), ("latent_b", latent_b)) if lat is not None]
        parts = []
        for name, lat in given:  # each checked on its own, so an error names the latent it is about
            if space == "z":
                z = lat.get("z") if lat["space"] != "z" else lat["tensor"]
                if z is None:
                    raise _err(node, "space", f"{name} carries no z (it was not made from seeds).",
                               fix="choose space 'w' or 'w+'.")
                if parts and z.shape[1:] != parts[0].shape[1:]:
                    raise _err(node, name, f"its z has {tuple(z.shape[1:])} values per latent, latent_a's "
                               f"{tuple(parts[0].shape[1:])}.", fix="make both latents with the same generator.")
                parts.append(z)
            else:
                ws = _wplus(node, name, generator, lat)
                parts.append(ws[:, 0] if space == "w" else ws)
        pts = torch.cat(parts)
        if pts.shape[0] < 2:
            raise _err(node, "latent_b", "need two latents to interpolate.",
                       fix="connect latent_b, or give latent_a several seeds.")
        count = (pts.shape[0] - 1) * (int(frames) - 1) + 1
        if count > MAX_LATENT_ITEMS:
            raise _err(node, "frames", f"{pts.shape[0] - 1} segments of {frames} frames make {count} latents; at "
                       f"most {MAX_LATENT_ITEMS} are made at once.", fix="use fewer frames or fewer latents.")
        path = gl.interpolate_path(pts, frames, method)
        tr = latent_a.get("truncation")
        return (gl.make_latent(space, path, generator, z=path if space == "z" else None, truncation=tr),)


class HumanGenSaveImageWithLatent:
    DESCRIPTION = "Save PNGs with the latent (and generator id) embedded in the metadata; reload with the loader node."
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    OUTPUT_TOOLTIPS = ()  # a sink: it writes files and returns nothing

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to save."}),
            "latent": (LAT, {"tooltip": "The latent that made the images; it is written into each PNG."}),
            "filename_prefix": ("STRING", {"default": "HumanGen/stylegan", "tooltip": "File name prefix (may "
                                "include a sub-folder of the output folder)."}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        """The prefix is checked before any node of the job runs."""
        from ..utils import host
        from ..utils.paths import check_output_target
        return check_output_target(host.output_dir(), filename_prefix, node="HumanGenSaveImageWithLatent")

    def save(self, images, latent, filename_prefix="HumanGen/stylegan", prompt=None, extra_pnginfo=None):
        from ..utils import host
        from ..utils.latent_png import save_pngs_with_latent
        node = "HumanGenSaveImageWithLatent"
        if host.metadata_disabled():  # ComfyUI --disable-metadata: no prompt/workflow (the latent is the point)
            prompt = extra_pnginfo = None
        results = save_pngs_with_latent(images, latent, host.output_dir(), filename_prefix, prompt, extra_pnginfo,
                                        node=node)  # its errors name the input at fault
        return {"ui": {"images": results}}


class HumanGenLoadLatentFromImage:
    DESCRIPTION = "Read the latent embedded by 'Save Image With Latent' from a PNG in the input folder."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (LAT, "IMAGE")
    RETURN_NAMES = ("latent", "image")
    OUTPUT_TOOLTIPS = ("The stored latent.", "The image itself.")

    @classmethod
    def INPUT_TYPES(cls):
        import os
        from ..utils import host
        root = host.input_dir()
        files = sorted(f for f in (os.listdir(root) if os.path.isdir(root) else []) if f.lower().endswith(".png"))
        return {"required": {"image": (files or ["(no PNG in the input folder)"],
                                       {"tooltip": "A PNG saved by Save Image With Latent (HumanGen).",
                                        "image_upload": True})}}

    @classmethod
    def IS_CHANGED(cls, image):
        """The file's content hash: the host caches by inputs, so re-uploading another PNG under the same name must
        invalidate the cached latent (as core LoadImage does). Names outside the input/output/temp folders are
        never read (load() reports them)."""
        from ..utils import host
        from ..utils.checkpoints import content_hash
        from ..utils.errors import HumanGenError
        try:
            path = host.annotated_path(image, node="HumanGenLoadLatentFromImage", input_name="image")
        except HumanGenError:
            return float("nan")
        return content_hash(str(path)) if path.is_file() else float("nan")

    def load(self, image):
        from ..utils import host
        from ..utils.latent_png import read_png_latent
        node = "HumanGenLoadLatentFromImage"
        path = host.annotated_path(image, node=node, input_name="image")
        if not path.is_file():
            folder = host.split_annotation(image)[0]
            raise _err(node, "image", f"file {image!r} not found in the {folder} folder.", fix="upload the PNG first.")
        return read_png_latent(str(path), node=node, input_name="image")


NODE_CLASS_MAPPINGS = {
    "HumanGenStyleGANLoader": HumanGenStyleGANLoader,
    "HumanGenLatentFromSeeds": HumanGenLatentFromSeeds,
    "HumanGenStyleGANSynthesize": HumanGenStyleGANSynthesize,
    "HumanGenStyleMix": HumanGenStyleMix,
    "HumanGenLatentInterpolate": HumanGenLatentInterpolate,
    "HumanGenSaveImageWithLatent": HumanGenSaveImageWithLatent,
    "HumanGenLoadLatentFromImage": HumanGenLoadLatentFromImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HumanGenStyleGANLoader": "StyleGAN Loader (HumanGen)",
    "HumanGenLatentFromSeeds": "Latent From Seeds (HumanGen)",
    "HumanGenStyleGANSynthesize": "StyleGAN Synthesize (HumanGen)",
    "HumanGenStyleMix": "Style Mix (HumanGen)",
    "HumanGenLatentInterpolate": "Latent Interpolate (HumanGen)",
    "HumanGenSaveImageWithLatent": "Save Image With Latent (HumanGen)",
    "HumanGenLoadLatentFromImage": "Load Latent From Image (HumanGen)",
}
