"""HumanGen: full-body human image generation nodes for ComfyUI.

ComfyUI imports this folder as a package (under whatever the folder is called), so every internal import is
relative. Importing it is cheap: no torch, no downloads; heavy libraries load inside the nodes that use them.
"""
from .utils import compat as _compat

_compat.install_import_hook()  # CPU torchvision::nms before anything imports torchvision (see utils/compat.py)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__version__ = "0.1.0"
WEB_DIRECTORY = "./web"  # the pose editor widget (plain ES modules, no build step)
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
