"""Parts2Whole nodes called directly with the standalone host (tiny random models in the tmp model folder)."""
from __future__ import annotations

import shutil

import pytest
import torch

import p2w_tiny
from humangen import NODE_CLASS_MAPPINGS
from humangen.utils.errors import HumanGenInterrupted, NodeInputError


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return p2w_tiny.shared(tmp_path_factory)


@pytest.fixture
def installed(standalone_host, tiny_folder, tmp_path):
    dest = tmp_path / "models" / "parts2whole" / "tiny"
    shutil.copytree(tiny_folder, dest)
    return dest


def node(name):
    return NODE_CLASS_MAPPINGS[name]()


@pytest.mark.parametrize("component,weights", [
    ("unet", "diffusion_pytorch_model.safetensors"), ("reference_unet", "diffusion_pytorch_model.safetensors"),
    ("vae", "diffusion_pytorch_model.safetensors"), ("pose_guider", "diffusion_pytorch_model.safetensors"),
    ("text_encoder", "model.safetensors"), ("image_encoder", "model.safetensors")])
def test_loader_refuses_a_component_lacking_a_tensor(installed, component, weights):
    """The libraries would load it with that tensor random (or left on the meta device) and only log a warning.
    The reference UNet's head and last transformer block may be absent (as on the hub); nothing else may."""
    from safetensors.torch import load_file, save_file
    path = installed / component / weights
    state = load_file(str(path))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(path))
    with pytest.raises(NodeInputError) as err:
        node("HumanGenParts2WholeLoader").load("tiny", "fp32")
    msg = str(err.value)
    assert msg.startswith("HumanGenParts2WholeLoader: input 'model_name': ")
    assert f"{component}: the weights file lacks 1 of the model's tensors ({dropped})" in msg and "Fix:" in msg


@pytest.mark.parametrize("component,field,value,match", [
    ("unet", "layers_per_block", 3000, r"unet: config\.json: layers_per_block = 3000 is not a count of layers"),
    ("text_encoder", "num_hidden_layers", 100000, r"text_encoder: config\.json: num_hidden_layers = 100000"),
    ("vae", "down_block_types", ["DownEncoderBlock2D"] * 5000, r"vae: config\.json: down_block_types lists 5000"),
    ("unet", None, {"layers_per_block": 100, "transformer_layers_per_block": 100},
     r"unet: config\.json: its layer counts multiply to 20000 layers"),
])
def test_loader_refuses_configs_asking_for_absurd_layer_counts(installed, component, field, value, match):
    """3000 layers per block took the library 100 s to build (on the meta device) before it compared a weight."""
    import json
    path = installed / component / "config.json"
    config = json.loads(path.read_text())
    config.update(value if field is None else {field: value})
    path.write_text(json.dumps(config))
    with pytest.raises(NodeInputError, match="HumanGenParts2WholeLoader: input 'model_name': .*" + match + ".*Fix:"):
        node("HumanGenParts2WholeLoader").load("tiny", "fp32")


def test_loader_refuses_nan_weights(installed):
    from safetensors.torch import load_file, save_file
    path = installed / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    key = sorted(k for k in state if k.endswith(".weight"))[0]
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(path))
    from humangen.utils.errors import UnsupportedCheckpointError
    with pytest.raises(UnsupportedCheckpointError, match=f"^HumanGenParts2WholeLoader: input 'model_name': .*vae: "
                                                         f"{key} holds NaN or infinite values.*Fix:"):
        node("HumanGenParts2WholeLoader").load("tiny", "fp32")


@pytest.mark.parametrize("damage", ["vocab_not_json", "merges_garbage", "processor_not_json"])
def test_loader_names_a_damaged_tokenizer_or_processor(installed, damage):
    if damage == "vocab_not_json":
        (installed / "tokenizer" / "vocab.json").write_text("{not json")
    elif damage == "merges_garbage":
        (installed / "tokenizer" / "merges.txt").write_text("#version: 0.2\nonlyonetoken\n")
    else:
        (installed / "feature_extractor" / "preprocessor_config.json").write_text("[1, 2")
    with pytest.raises(NodeInputError) as err:
        node("HumanGenParts2WholeLoader").load("tiny", "fp32")
    msg = str(err.value)
    folder = "feature_extractor" if damage == "processor_not_json" else "tokenizer"
    assert msg.startswith("HumanGenParts2WholeLoader: input 'model_name': ") and f"{folder}: could not be loaded" \
        in msg and "Fix:" in msg, msg


def _image(h=48, w=40, seed=0):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _two_parts():
    ref = node("HumanGenPartReference")
    mask = torch.zeros(1, 48, 40)
    mask[:, 10:40, 5:35] = 1
    (parts,) = ref.add(_image(seed=1), "upper body clothes", mask=mask)
    (parts,) = ref.add(_image(32, 32, seed=2), "face", parts=parts)
    return parts


def test_loader_lists_folder_and_loads(installed):
    cls = NODE_CLASS_MAPPINGS["HumanGenParts2WholeLoader"]
    assert cls.INPUT_TYPES()["required"]["model_name"][0] == ["tiny"]
    (model,) = node("HumanGenParts2WholeLoader").load("tiny", "auto")
    assert model.dtype == torch.float32 and model.path == str(installed)
    assert any(hasattr(p, "to_k_dc") for p in model.unet.attn_processors.values())


def test_loader_names_missing_components(installed):
    shutil.rmtree(installed / "pose_guider")
    (installed / "decoupled_attn.pth").unlink()
    with pytest.raises(NodeInputError) as err:
        node("HumanGenParts2WholeLoader").load("tiny", "fp32")
    msg = str(err.value)
    assert "HumanGenParts2WholeLoader: input 'model_name'" in msg
    assert "pose_guider/" in msg and "decoupled_attn.pth" in msg and "Fix:" in msg


def test_part_reference_chains_and_validates():
    parts = _two_parts()
    assert [p.label for p in parts] == ["upper body clothes", "face"]
    assert parts[0].mask.shape == (48, 40) and parts[1].mask is None
    ref = node("HumanGenPartReference")
    # LoadImage of a transparent cut-out: MASK = 1 - alpha; invert_mask takes the garment
    cutout = torch.ones(1, 48, 40)
    cutout[:, 10:20, 10:20] = 0
    (inv,) = ref.add(_image(), "shoes", invert_mask=True, mask=cutout)
    assert float(inv[0].mask.sum()) == 100.0
    # LoadImage of a JPEG: an empty 64x64 MASK -> a clear error, not a silently ignored part
    with pytest.raises(NodeInputError, match=r"HumanGenPartReference: input 'mask': the mask is empty"):
        ref.add(_image(), "face", mask=torch.zeros(1, 64, 64))
    with pytest.raises(NodeInputError, match=r"input 'image': got a batch of 2"):
        ref.add(torch.rand(2, 8, 8, 3), "face")
    chain = None
    for _ in range(6):
        (chain,) = ref.add(_image(8, 8), "face", parts=chain)
    with pytest.raises(NodeInputError, match=r"input 'parts': already holds 6 parts"):
        ref.add(_image(8, 8), "face", parts=chain)


def _label_map(h=48, w=40):
    lm = torch.zeros(h, w, dtype=torch.long)
    lm[2:8, 10:30] = 2     # hair
    lm[8:16, 12:28] = 11   # face
    lm[16:30, 5:35] = 4    # upper clothes
    lm[30:44, 8:32] = 6    # pants
    lm[44:48, 8:14] = 9    # left shoe
    return lm


TOGGLES = dict(face=True, hair_or_headwear=True, upper_body_clothes=True, lower_body_clothes=True,
               whole_body_clothes=False, shoes=False)


@pytest.mark.parametrize("encoding", ["per_class", "class_index", "class_index_4d"])
def test_parts_from_a_mask_set(encoding):
    lm = _label_map()
    if encoding == "per_class":
        seg = torch.stack([(lm == c).float() for c in range(18)])
    else:  # a class-index PNG loaded as a MASK, also as [1, 1, H, W]
        seg = (lm.float() / 255.0)[None] if encoding == "class_index" else (lm.float() / 255.0)[None, None]
    ex = node("HumanGenPartsFromSegmentation")
    parts, masks = ex.extract(_image(), "none (use the segmentation input)", segmentation=seg, **TOGGLES)
    assert [p.label for p in parts] == ["face", "hair or headwear", "upper body clothes", "lower body clothes"]
    torch.testing.assert_close(masks[0], (lm == 11).float())
    torch.testing.assert_close(masks[1], ((lm == 1) | (lm == 2)).float())
    torch.testing.assert_close(masks[3], ((lm == 5) | (lm == 6)).float())
    # whole body clothes = upper + skirt + pants + dress; shoes absent from the selection
    parts, masks = ex.extract(_image(), "none (use the segmentation input)", segmentation=seg, crop_to_part=True,
                              **dict(TOGGLES, face=False, hair_or_headwear=False, upper_body_clothes=False,
                                     lower_body_clothes=False, whole_body_clothes=True, shoes=True))
    assert [p.label for p in parts] == ["whole body clothes", "shoes"]
    torch.testing.assert_close(masks[0], ((lm == 4) | (lm == 6)).float())
    assert parts[1].image.shape[:2] == (4, 6)  # cropped to the shoe's box (4x6, margin rounds to 0)


def test_parts_from_segformer_folder(standalone_host, tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor
    torch.manual_seed(0)
    seg = SegformerForSemanticSegmentation(SegformerConfig(
        depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 16, 16], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16,
        num_labels=18))
    folder = tmp_path / "models" / "segformer" / "segformer_b2_clothes"
    seg.save_pretrained(folder)
    SegformerImageProcessor(do_resize=False).save_pretrained(folder)
    img = _image(64, 48, seed=3)
    cls = NODE_CLASS_MAPPINGS["HumanGenPartsFromSegmentation"]
    assert cls.INPUT_TYPES()["required"]["segformer"][0][0] == "segformer_b2_clothes"
    toggles = {k: True for k in TOGGLES}
    # the same map computed here: normalise, run, upsample bilinearly, argmax
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.round(img * 255) / 255).movedim(-1, 1)
    with torch.no_grad():
        logits = seg.eval()(pixel_values=(x - mean) / std).logits
    lm = torch.nn.functional.interpolate(logits, size=(64, 48), mode="bilinear", align_corners=False).argmax(1)[0]
    present = [label for label, ids in [("face", (11,)), ("hair or headwear", (1, 2)),
                                        ("upper body clothes", (4,)), ("lower body clothes", (5, 6)),
                                        ("whole body clothes", (4, 5, 6, 7)), ("shoes", (9, 10))]
               if int(torch.isin(lm, torch.tensor(ids)).sum()) >= 16]
    assert present  # the seeded random parser labels some hair and pants pixels
    parts, masks = cls().extract(img, "segformer_b2_clothes", **toggles)
    assert [p.label for p in parts] == present[:6]
    from humangen.models.parts2whole.parts import PART_CLASSES
    for p, m in zip(parts, masks):
        torch.testing.assert_close(m, torch.isin(lm, torch.tensor(PART_CLASSES[p.label])).float())


def test_segmentation_without_source_is_a_clear_error():
    with pytest.raises(NodeInputError, match=r"input 'segformer': no SegFormer model"):
        node("HumanGenPartsFromSegmentation").extract(_image(), "none (use the segmentation input)", **TOGGLES)


def test_sampler_node_batch_progress_and_interrupt(installed, standalone_host):
    (model,) = node("HumanGenParts2WholeLoader").load("tiny", "fp32")
    parts = _two_parts()
    pose = torch.rand(1, 80, 60, 3, generator=torch.Generator().manual_seed(5))
    seen = []
    standalone_host.progress_listener = lambda v, t, p: seen.append((v, t))
    sampler = node("HumanGenPartReferenceSampler")
    args = dict(prompt="a person", negative="", steps=3, guidance=3.5, seed=11, width=64, height=64)
    (images,) = sampler.sample(model, parts, pose, batch_size=2, **args)
    assert images.shape == (2, 64, 64, 3) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert seen[-1] == (3, 3) and [v for v, _ in seen] == [1, 2, 3]
    (again,) = sampler.sample(model, parts, pose, batch_size=1, **args)
    torch.testing.assert_close(again[0], images[0], rtol=1e-4, atol=1e-4)
    for name in ("height", "width"):  # the input that is wrong, whichever it is
        with pytest.raises(NodeInputError, match=f"HumanGenPartReferenceSampler: input '{name}': `{name}` must be a "
                                                 f"positive multiple of 8, got 68"):
            sampler.sample(model, parts, pose, batch_size=1, **dict(args, **{name: 68}))
    with pytest.raises(NodeInputError, match=r"input 'densepose': 3 images for batch_size 2"):
        sampler.sample(model, parts, torch.rand(3, 8, 8, 3), batch_size=2, **args)
    standalone_host.interrupt_event.set()
    with pytest.raises(HumanGenInterrupted):
        sampler.sample(model, parts, pose, batch_size=1, **args)
    assert not any(type(p).__name__.startswith("Bank") for p in model.unet.attn_processors.values())


def _rgba_part(h=64, w=48):
    """A part cut-out: opaque random colour in the middle, a half-transparent band, and pure red under alpha 0."""
    rgba = torch.zeros(1, h, w, 4)
    rgba[..., 0] = 1.0  # red everywhere, including under the transparent pixels
    rgba[:, 16:48, 12:36, :3] = torch.rand(32, 24, 3, generator=torch.Generator().manual_seed(5))
    rgba[:, 16:48, 12:36, 3] = 1.0
    rgba[:, 16:24, 12:36, 3] = 0.5
    return rgba


def test_rgba_part_is_composited_on_white_and_its_alpha_is_the_mask():
    rgba = _rgba_part()
    (parts,) = node("HumanGenPartReference").add(rgba, "upper body clothes")
    (part,) = parts
    alpha = rgba[0, ..., 3]
    assert torch.equal(part.part_mask, alpha)
    outside = alpha == 0
    assert torch.equal(part.image[outside], torch.ones(int(outside.sum()), 3))  # no red leaks in
    assert torch.equal(part.image[24:48, 12:36], rgba[0, 24:48, 12:36, :3])  # the opaque part is unchanged
    half = rgba[0, 16:24, 12:36, :3] * 0.5 + 0.5
    assert torch.allclose(part.image[16:24, 12:36], half)
    # a connected mask gates the attention; the alpha still composites
    mask = torch.zeros(1, 64, 48)
    mask[:, 30:40, 20:30] = 1
    (parts,) = node("HumanGenPartReference").add(rgba, "face", mask=mask)
    assert torch.equal(parts[0].part_mask, mask[0]) and torch.equal(parts[0].image, part.image)
    # an opaque RGB image is an ordinary part (whole image, no alpha)
    (parts,) = node("HumanGenPartReference").add(rgba[..., :3], "face")
    assert parts[0].part_mask is None and torch.equal(parts[0].image, rgba[0, ..., :3])
    clear = rgba.clone()
    clear[..., 3] = 0
    with pytest.raises(NodeInputError, match=r"HumanGenPartReference: input 'image': the image is fully transparent"):
        node("HumanGenPartReference").add(clear, "face")


@pytest.mark.parametrize("size", [(1024, 768), (300, 200)])
def test_references_are_resized_as_upstreams_pil_pipeline(size):
    """Upstream: `Image.convert("RGBA").resize((W, H))` (bicubic, premultiplied alpha), then colour * a + white *
    (1 - a); the alpha is the mask."""
    import numpy as np
    from PIL import Image

    from humangen.models.parts2whole.parts import PartRef, from_rgba
    from humangen.models.parts2whole.pipeline import prepare_references
    h, w = size
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[h // 4:3 * h // 4, w // 4:3 * w // 4, 3] = 255
    rgba[h // 4:h // 2, w // 4:w // 2, 3] = 128
    up = np.asarray(Image.fromarray(rgba, "RGBA").resize((512, 768))).astype(np.float32) / 255
    expected = up[..., :3] * up[..., 3:] + (1 - up[..., 3:])
    images, masks = prepare_references([from_rgba(torch.from_numpy(rgba.astype(np.float32) / 255), "face")], 768, 512)
    ours = ((images[0] + 1) / 2).movedim(0, -1).numpy()
    diff = np.abs(ours - expected) * 255
    assert diff.max() <= 2.0 and diff.mean() < 0.05, (diff.max(), diff.mean())
    np.testing.assert_allclose(masks[0, 0].numpy(), up[..., 3], atol=1e-6)
    grey = np.asarray(Image.fromarray(rgba[..., 3]).resize((512, 768))).astype(np.float32) / 255
    mask = torch.from_numpy(rgba[..., 3] / 255.0).float()
    _, given = prepare_references([PartRef(torch.rand(h, w, 3), "face", mask)], 768, 512)
    np.testing.assert_allclose(given[0, 0].numpy(), grey, atol=1e-6)  # a mask: PIL's "L" resize
