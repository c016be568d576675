"""Parts2Whole (huanngzh/Parts2Whole) on current diffusers: part references + DensePose -> a whole person.

- `loader.load_parts2whole(folder)` -> `Parts2WholeModel` (safe loading; lists missing components)
- `attention`: bank write/read processors and the decoupled cross-attention processor
- `pose_guider.PoseGuider`: DensePose encoder added after the denoiser's conv_in
- `pipeline.generate(...)`: the sampler (upstream bugs fixed, see its docstring)
- `parts`: `PartRef`, labels and the SegFormer clothes-class mapping
"""
from .parts import LABELS, MAX_PARTS, PART_CLASSES, PartRef, add_part  # noqa: F401
