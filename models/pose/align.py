"""Body-centred 2:1 full-body alignment (StyleGAN-Human's `alignment.py`, with its person-indexing bug fixed).

Steps (gan.md §9.1):
1. inputs with height >= 2000 are first downscaled to height 1200 (area resampling);
2. composite the photo on white with the person mask (soft alpha, restricted to the chosen person's blob);
3. vertical extent = top/bottom of that blob, widened by 5 % of its height + 5 px on each side;
4. horizontal body centre = mean of the shoulder-centre x and the hip-centre x *of the chosen person* (upstream
   reads `keypoints[1]`, `[8]`, `[11]` from the detection candidate list, right only when every part was found
   once; we use the person's own joints);
5. a 2:1 (H:W) box around that centre (wider when the body is wider than half the height, then taller to keep 2:1);
   where it leaves the photo the image is white and the mask 0 (StyleGAN-Human's aligner pads a person whose mask
   reaches the photo's edge with pure white; repeating the edge row would smear the cut-off body and anything the
   segmentation kept down the padding of a half-body photo);
6. resize to W x H (512x1024 or 256x512) with area resampling.
The mask edge is the segmenter's soft alpha, softened further only by the area resampling (upstream takes PP-HumanSeg's
argmax mask, whose edge the same resize softens); the person's own pixels are never blended with anything.
The keypoints are mapped into the aligned frame with the same transform (`x' = (x - x0) * s`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...utils.errors import HumanGenError

L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, L_ANKLE, R_ANKLE = 5, 6, 11, 12, 15, 16
SIZES = {"1024x512": (512, 1024), "512x256": (256, 512)}  # name (H x W) -> (W, H)


class AlignmentError(HumanGenError):
    """The photo is not a usable full body (message says why; `fix` says what to do)."""

    def __init__(self, problem: str, fix: str):
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem} Fix: {fix}")


@dataclass
class AlignResult:
    image: np.ndarray            # uint8 [H, W, 3], on white outside the person
    mask: np.ndarray             # float32 [H, W] in [0, 1]
    matrix: np.ndarray           # 2x3: source pixel -> aligned pixel
    keypoints: list              # people (COCO-17 [17,3]) mapped into the aligned frame
    person_index: int            # which person the frame is centred on
    box: tuple                   # crop box in (possibly downscaled) source pixels: x0, y0, x1, y1
    warnings: list = field(default_factory=list)


def downscale_large(image: np.ndarray, max_height: int = 2000, target: int = 1200) -> tuple[np.ndarray, float]:
    """Upstream step 1: height >= max_height -> height `target` (INTER_AREA). Returns (image, scale)."""
    import cv2
    h, w = image.shape[:2]
    if h < max_height:
        return image, 1.0
    s = target / h
    return cv2.resize(image, (max(1, round(w * s)), target), interpolation=cv2.INTER_AREA), s


def _present(k: np.ndarray, idx: int, thr: float, w: int, h: int) -> bool:
    x, y, c = k[idx]
    return c > thr and 0 <= x <= w and 0 <= y <= h


def choose_person(people: list, person_index: int = -1) -> int:
    """The person to align on: `person_index` >= 0, or the only one (-1); errors otherwise."""
    n = len(people)
    if n == 0:
        raise AlignmentError("no person was found in the image.",
                             "use a photo with one clearly visible person, or connect a pose with one person.")
    if person_index >= 0:
        if person_index >= n:
            raise AlignmentError(f"person_index {person_index} was asked for, but only {n} people were found.",
                                 f"set person_index between 0 and {n - 1} (or -1 when there is one person).")
        return person_index
    if n > 1:
        raise AlignmentError(f"{n} people were found and none was chosen.",
                             f"set person_index to the person to centre on (0..{n - 1}).")
    return 0


def body_centre_x(k: np.ndarray, thr: float, w: int, h: int, allow_partial: bool, warnings: list) -> float | None:
    """Mean of shoulder-centre x and hip-centre x (each from the side(s) present)."""
    shoulders = [k[i, 0] for i in (L_SHOULDER, R_SHOULDER) if _present(k, i, thr, w, h)]
    hips = [k[i, 0] for i in (L_HIP, R_HIP) if _present(k, i, thr, w, h)]
    ankles = [i for i in (L_ANKLE, R_ANKLE) if _present(k, i, thr, w, h)]
    missing = [name for name, found in (("shoulders", shoulders), ("hips", hips), ("ankles", ankles)) if not found]
    if missing:
        if not allow_partial:
            raise AlignmentError(
                f"the photo is not a full body: no {' and no '.join(missing)} detected (confidence > {thr}).",
                "use a head-to-toe photo, or turn on allow_partial to align what is visible.")
        warnings.append(f"partial body: missing {', '.join(missing)}")
    centres = [float(np.mean(v)) for v in (shoulders, hips) if v]
    return float(np.mean(centres)) if centres else None


def _person_blob(mask: np.ndarray, k: np.ndarray, thr: float) -> np.ndarray:
    """The connected component of mask > 0.5 holding most of the person's keypoints (else the largest)."""
    import cv2
    binary = (mask > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        raise AlignmentError("the person mask is empty (no person segmented).",
                             "use a photo with a clearly visible person, or connect a better MASK.")
    h, w = mask.shape
    votes = np.zeros(n, np.int64)
    for x, y, c in k:
        if c > thr and 0 <= x < w and 0 <= y < h:
            votes[labels[int(y), int(x)]] += 1
    votes[0] = -1
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    areas[0] = -1
    best = int(np.lexsort((areas, votes))[-1])
    return labels == best


def align_full_body(image: np.ndarray, mask: np.ndarray, people: list, *, size: tuple[int, int] = (512, 1024),
                    person_index: int = -1, allow_partial: bool = False, keypoint_threshold: float = 0.3,
                    margin: float = 0.05, margin_px: float = 5.0) -> AlignResult:
    """Align a photo (uint8 RGB [H,W,3]) with its person mask (float [H,W] in [0,1]) and people (COCO-17 [17,3]
    in the photo's pixels) into a W x H = `size` (2:1) body-centred frame on white."""
    import cv2
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise AlignmentError(f"expected an RGB image, got {img.dtype} {img.shape}.",
                             "connect an IMAGE with a person in it.")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise AlignmentError(f"the image is {img.shape[1]}x{img.shape[0]} pixels, too small to hold a person.",
                             "connect a photo of a person.")
    h, w = img.shape[:2]
    mask = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    if mask.shape != (h, w):
        raise AlignmentError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}.",
                             "use a mask made from this image.")
    out_w, out_h = size
    if out_h != 2 * out_w:
        raise ValueError(f"align: size must be 2:1 (H = 2 W), got {size}")
    warnings: list[str] = []
    pi = choose_person(people, person_index)
    k = np.asarray(people[pi], np.float64)
    cx = body_centre_x(k, keypoint_threshold, w, h, allow_partial, warnings)

    blob = _person_blob(mask, k, keypoint_threshold)
    ys, xs = np.nonzero(blob)
    top, bottom = float(ys.min()), float(ys.max() + 1)
    left, right = float(xs.min()), float(xs.max() + 1)
    if cx is None:  # allow_partial and neither shoulders nor hips: centre on the blob
        cx = (left + right) / 2
        warnings.append("no shoulders or hips: centred on the person mask")

    # 2. composite on white with the person's soft alpha (other blobs dropped)
    r = max(1, round(0.01 * max(h, w)))
    near = cv2.dilate(blob.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    alpha = mask * near.astype(np.float32)
    comp = img.astype(np.float32) * alpha[..., None] + 255.0 * (1.0 - alpha[..., None])
    comp = np.clip(np.round(comp), 0, 255).astype(np.uint8)

    # 3. vertical extent with margin; 5. a 2:1 box centred on cx
    pad = margin * (bottom - top) + margin_px
    top, bottom = top - pad, bottom + pad
    crop_h = bottom - top
    half_needed = max(cx - left, right - cx)
    crop_w = crop_h / 2
    if 2 * half_needed > crop_w:  # body wider than half the height: widen, then grow the height to keep 2:1
        crop_w = 2 * half_needed
        crop_h = 2 * crop_w
    cy = (top + bottom) / 2
    wc = max(1, int(round(crop_w)))
    hc = 2 * wc
    x0 = int(round(cx - wc / 2))
    y0 = int(round(cy - hc / 2))
    x1, y1 = x0 + wc, y0 + hc

    def crop(a: np.ndarray, outside) -> np.ndarray:
        pl, pt = max(0, -x0), max(0, -y0)
        pr, pb = max(0, x1 - w), max(0, y1 - h)
        inner = a[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        if inner.size == 0:
            raise AlignmentError("the crop box lies outside the photo.", "check the pose input matches the image.")
        if pl or pt or pr or pb:
            inner = cv2.copyMakeBorder(np.ascontiguousarray(inner), pt, pb, pl, pr, cv2.BORDER_CONSTANT,
                                       value=outside)
        return inner

    # 6. area resampling to the output size
    out_img = cv2.resize(crop(comp, (255, 255, 255)), (out_w, out_h), interpolation=cv2.INTER_AREA)
    out_mask = cv2.resize(crop(alpha, 0.0), (out_w, out_h), interpolation=cv2.INTER_AREA)
    s = out_w / wc
    matrix = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    mapped = []
    for person in people:
        q = np.asarray(person, np.float64).copy()
        ok = q[:, 2] > 0
        q[ok, :2] = q[ok, :2] @ matrix[:, :2].T + matrix[:, 2]
        mapped.append(q)
    return AlignResult(out_img, np.clip(out_mask, 0, 1).astype(np.float32), matrix, mapped, pi,
                       (x0, y0, x1, y1), warnings)
