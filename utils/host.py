"""The one place that talks to the ComfyUI host.

Every other module asks this adapter for model folders, progress bars, interrupt checks, the torch device and
model memory management. Inside ComfyUI it uses `folder_paths`, `comfy.utils.ProgressBar` and
`comfy.model_management`; outside (tests, the headless runner) it uses plain folders, tqdm and a threading.Event.
Nothing here imports `comfy`, `folder_paths` or torch at module import time.

Tests swap the active host with `use(host)`; `reset()` goes back to auto-detection.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import HumanGenError, HumanGenInterrupted, NodeInputError

# Our model folders: name -> accepted file endings. `upscale_models` is the core folder, reused.
# Loaders add nothing here at run time: the list is data, registered once with the host.
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "stylegan": (".pkl", ".pt", ".pth", ".safetensors"),
    "unitedhuman": (".pkl", ".pt", ".pth", ".safetensors"),
    "humansd": (".ckpt", ".safetensors", ".pt", ".pth"),
    "parts2whole": ("",),  # diffusers-format folders: entries are directories
    "smplx": (".npz", ".pkl", ".pt", ".pth"),
    "mmpose": (".pth", ".pt", ".safetensors"),
    "lpips": (".pth", ".pt", ".safetensors"),
    "segformer": ("",),
    "upscale_models": (".pth", ".pt", ".safetensors", ".ckpt", ".bin"),
    "face_restore": (".pth", ".pt", ".safetensors"),
    "stylegan_directions": (".pt", ".pth", ".npy", ".safetensors", ".pkl"),
}
CORE_FOLDERS = {"upscale_models"}  # ComfyUI already registers these


class Progress:
    """A progress counter: `update(n)`, `update_absolute(value, preview=None)`; usable as a context manager."""

    def __init__(self, total: int, desc: str = "", on_update: Callable[[int, int, Any], None] | None = None):
        self.total = max(int(total), 1)
        self.value = 0
        self.desc = desc
        self._on_update = on_update
        self._bar = None

    def update(self, n: int = 1, preview: Any = None) -> None:
        self.update_absolute(self.value + n, preview)

    def update_absolute(self, value: int, preview: Any = None) -> None:
        self.value = min(int(value), self.total)
        if self._on_update is not None:
            self._on_update(self.value, self.total, preview)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _TqdmProgress(Progress):
    def __init__(self, total: int, desc: str = "", on_update=None):
        super().__init__(total, desc, on_update)
        try:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=self.total, desc=desc or "HumanGen", leave=False,
                             disable=os.environ.get("HUMANGEN_NO_PROGRESS") == "1")
        except ImportError:  # tqdm is a soft dependency of the standalone path only
            self._bar = None

    def update_absolute(self, value: int, preview: Any = None) -> None:
        before = self.value
        super().update_absolute(value, preview)
        if self._bar is not None:
            self._bar.update(self.value - before)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass
class StandaloneHost:
    """Host services outside ComfyUI: `$HUMANGEN_MODELS_DIR/<kind>` (default `./models/<kind>`), tqdm, an Event."""

    models_root: str | None = None
    output_root: str | None = None
    input_root: str | None = None
    device: str | None = None
    # The runner's --quiet: native libraries' log lines are held back too (see `quiet_native_logs`).
    quiet: bool = False

    def __post_init__(self) -> None:
        self.interrupt_event = threading.Event()
        # The user asked to stop the run (Ctrl-C). interrupt_event is raised by that and by a job's time limit
        # (runner/engine.py `time_limit`), which stops only its own job.
        self.stop_requested = threading.Event()
        # The runner listens here to show per-node progress: callable(value, total, preview).
        self.progress_listener: Callable[[int, int, Any], None] | None = None

    name = "standalone"

    # -- folders ---------------------------------------------------------------------------------------------
    def _models_root(self) -> str:
        return os.path.abspath(self.models_root or os.environ.get("HUMANGEN_MODELS_DIR") or "models")

    def model_dirs(self, kind: str) -> list[str]:
        _check_kind(kind)
        return [os.path.join(self._models_root(), kind)]

    def output_dir(self) -> str:
        return os.path.abspath(self.output_root or os.environ.get("HUMANGEN_OUTPUT_DIR") or "output")

    def input_dir(self) -> str:
        return os.path.abspath(self.input_root or os.environ.get("HUMANGEN_INPUT_DIR") or "input")

    def temp_dir(self) -> str:
        return os.path.join(self.output_dir(), "temp")

    # -- progress / interrupt ----------------------------------------------------------------------------------
    def progress(self, total: int, desc: str = "") -> Progress:
        if self.progress_listener is not None:  # the runner draws its own per-node bar
            return Progress(total, desc, self.progress_listener)
        return _TqdmProgress(total, desc)

    def check_interrupt(self) -> None:
        if self.interrupt_event.is_set():
            raise HumanGenInterrupted("processing interrupted")

    # -- devices / memory --------------------------------------------------------------------------------------
    def torch_device(self):
        import torch
        if self.device:
            return torch.device(self.device)
        env = os.environ.get("HUMANGEN_DEVICE")
        if env:
            return torch.device(env)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def offload_device(self):
        import torch
        return torch.device("cpu")

    def load_model(self, module):
        """Put a managed module on the compute device and return the device."""
        device = self.torch_device()
        module.to(device)
        return device

    def free_memory(self, nbytes: int = 0) -> None:
        import gc
        gc.collect()

    def core_upscale_model(self, descriptor):
        """An UPSCALE_MODEL (spandrel ImageModelDescriptor) as the host's own loader makes it; outside ComfyUI
        there is nothing to add."""
        return descriptor

    def metadata_disabled(self) -> bool:
        """True when saved images must carry no prompt/workflow (ComfyUI's --disable-metadata)."""
        return False

    def register_model_folders(self) -> None:
        pass


class ComfyHost(StandaloneHost):
    """Host services inside ComfyUI (imports `folder_paths` and `comfy.*` lazily, on first use)."""

    name = "comfyui"

    def __init__(self) -> None:
        super().__init__()
        self._registered = False

    def _fp(self):
        import folder_paths  # the host module
        if not self._registered:
            self._registered = True
            self.register_model_folders()
        return folder_paths

    def register_model_folders(self) -> None:
        """`models/<kind>` for each of our folders. Paths a user added first (extra_model_paths.yaml, loaded before
        custom nodes) keep their place; their entry gets our file endings (add_model_folder_path leaves it empty)."""
        import folder_paths
        for kind, exts in MODEL_FOLDERS.items():
            if kind in CORE_FOLDERS:
                continue
            path = os.path.join(folder_paths.models_dir, kind)
            endings = {e for e in exts if e}  # empty = any file (diffusers-style folders)
            if kind not in folder_paths.folder_names_and_paths:
                folder_paths.folder_names_and_paths[kind] = ([path], endings)
                continue
            folder_paths.add_model_folder_path(kind, path)
            known = folder_paths.folder_names_and_paths[kind][1]
            if isinstance(known, set) and known and endings:
                known.update(endings)

    def model_dirs(self, kind: str) -> list[str]:
        _check_kind(kind)
        return list(self._fp().get_folder_paths(kind))

    def metadata_disabled(self) -> bool:
        try:
            from comfy.cli_args import args
        except ImportError:
            return False
        return bool(getattr(args, "disable_metadata", False))

    def output_dir(self) -> str:
        return self._fp().get_output_directory()

    def input_dir(self) -> str:
        return self._fp().get_input_directory()

    def temp_dir(self) -> str:
        return self._fp().get_temp_directory()

    def progress(self, total: int, desc: str = "") -> Progress:
        import comfy.utils
        bar = comfy.utils.ProgressBar(max(int(total), 1))

        def forward(value: int, total_: int, preview: Any) -> None:
            bar.update_absolute(value, total_, preview)

        return Progress(total, desc, forward)

    def check_interrupt(self) -> None:
        import comfy.model_management as mm
        mm.throw_exception_if_processing_interrupted()  # the host reports it as `execution_interrupted`

    def torch_device(self):
        import comfy.model_management as mm
        return mm.get_torch_device()

    def offload_device(self):
        import comfy.model_management as mm
        return mm.unet_offload_device()

    def load_model(self, module):
        """Let the host's memory manager account for `module` (evicting other models if needed).

        The patcher manages a plain container around the module: ComfyUI's ModelPatcher assigns `model.device`,
        which diffusers' ModelMixin and transformers' PreTrainedModel forbid (a read-only property)."""
        import comfy.model_management as mm
        import comfy.model_patcher
        patcher = module.__dict__.get("_humangen_patcher")
        if patcher is None:
            patcher = comfy.model_patcher.ModelPatcher(
                _managed_container_class()(module), load_device=mm.get_torch_device(),
                offload_device=mm.unet_offload_device())
            module.__dict__["_humangen_patcher"] = patcher  # not a registered submodule: no cycle in .modules()
        mm.load_models_gpu([patcher])
        return mm.get_torch_device()

    def core_upscale_model(self, descriptor):
        """Give the descriptor what core `UpscaleModelLoader` attaches: `.patcher`, a model patcher of its network
        (core `ImageUpscaleWithModel` loads `upscale_model.patcher` since v0.9; v0.8 ignores it). The same patcher
        serves `load_model(descriptor.model)`, so the host accounts for the network once. A descriptor that already
        has one (from the core loader) keeps it."""
        import comfy.model_management as mm
        import comfy.model_patcher
        patcher = getattr(descriptor, "patcher", None)
        if patcher is None:
            make = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
            patcher = make(descriptor.model, load_device=mm.get_torch_device(),
                           offload_device=mm.unet_offload_device())
            descriptor.patcher = patcher
        descriptor.model.__dict__.setdefault("_humangen_patcher", patcher)
        return descriptor

    def core_node_classes(self, node_ids) -> dict[str, type]:
        """The host's own node classes for these ids (the headless runner's engine uses them inside ComfyUI)."""
        import nodes as comfy_nodes  # ComfyUI's nodes.py
        return {i: comfy_nodes.NODE_CLASS_MAPPINGS[i] for i in node_ids if i in comfy_nodes.NODE_CLASS_MAPPINGS}

    def free_memory(self, nbytes: int = 0) -> None:
        import comfy.model_management as mm
        mm.free_memory(nbytes, mm.get_torch_device())
        mm.soft_empty_cache()


@functools.cache
def _managed_container_class():
    import torch

    class ManagedModule(torch.nn.Module):
        """A container with a writable `device`, holding one module for the host's memory manager."""

        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner
            self.device = next(inner.parameters()).device

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    return ManagedModule


def _check_kind(kind: str) -> None:
    if kind not in MODEL_FOLDERS:
        raise KeyError(f"unknown HumanGen model folder {kind!r}; known: {sorted(MODEL_FOLDERS)}")


# ---- active host ----------------------------------------------------------------------------------------------
_active: StandaloneHost | None = None
_lock = threading.Lock()


def _detect() -> StandaloneHost:
    # The host is present when its modules are importable *and* ComfyUI itself set them up (main.py imports
    # folder_paths before loading custom nodes); a stray `folder_paths` on sys.path alone is not enough.
    if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
        try:
            importlib.import_module("comfy.model_management")
            return ComfyHost()
        except Exception:  # noqa: BLE001 - a broken/partial host install: run standalone, but say so
            import logging
            logging.getLogger("humangen").warning("ComfyUI modules found but not importable; running standalone",
                                                  exc_info=True)
    return StandaloneHost()


def get() -> StandaloneHost:
    global _active
    with _lock:
        if _active is None:
            _active = _detect()
        return _active


def use(host: StandaloneHost) -> StandaloneHost:
    """Make `host` the active host (tests, the runner). Returns it."""
    global _active
    with _lock:
        _active = host
    return host


def reset() -> None:
    global _active
    with _lock:
        _active = None


def in_comfyui() -> bool:
    return isinstance(get(), ComfyHost)


# ---- convenience functions used by nodes and models' callers ---------------------------------------------------
def model_dirs(kind: str) -> list[str]:
    return get().model_dirs(kind)


def list_models(kind: str, *, dirs_only: bool = False) -> list[str]:
    """Names (relative to the folder) of the files of `kind`; diffusers-style folders when `dirs_only`."""
    exts = MODEL_FOLDERS[kind]
    names: set[str] = set()
    for root in model_dirs(kind):
        if not os.path.isdir(root):
            continue
        if dirs_only:
            names.update(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            for f in files:
                if f.lower().endswith(exts):
                    names.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(names)


_TRUSTED_FILES: set[str] = set()


def trust_file(path: str) -> None:
    """Allow `model_path` to accept this absolute path. Only for paths a person typed on the command line (the
    runner's --set NODE.model_name=/abs/file): names from workflows, files or servers never come through here."""
    _TRUSTED_FILES.add(os.path.realpath(path))


def _model_file_or_folder(path: str, node: str, input_name: str) -> str:
    """`path` if it is a regular file or a folder (diffusers layouts), after links: a pipe blocks a reader forever
    and a device (a link to /dev/zero) never ends."""
    if not (os.path.isfile(path) or os.path.isdir(path)):
        raise HumanGenError(f"{node}: input '{input_name}': {os.path.basename(path)} is not a regular file (a pipe, "
                            "a device or a link to one). Fix: put the model file itself in the folder.")
    return path


def model_path(kind: str, name: str, *, node: str = "HumanGen", input_name: str = "model_name",
               prompt: dict | None = None, alternatives: tuple[str, ...] = ()) -> str:
    """Absolute path of `name` in the `kind` model folder(s), or a clear error naming the file, its folder, a direct
    link and (with the node's hidden `prompt`) what else the same workflow still needs.

    `name` comes from a workflow, so it is confined (`utils.paths.confine`): absolute paths and '..' are refused,
    subfolders are fine (links the user placed in the folder are followed, as ComfyUI does). An absolute path is
    accepted only when it was registered with `trust_file` (typed on the command line). `alternatives`: other
    documented layouts of the same file inside the folder."""
    from .paths import PathOutsideFolderError, confine
    if not isinstance(name, str) or not name.strip():
        raise HumanGenError(f"{node}: input '{input_name}': no model file chosen. Fix: pick a file from the "
                            f"'{kind}' model folder.")
    if os.path.isabs(name) and os.path.realpath(name) in _TRUSTED_FILES and os.path.exists(name):
        return _model_file_or_folder(name, node, input_name)
    dirs = model_dirs(kind)
    refused = None
    for root in dirs:
        for place in (name, *alternatives):
            try:
                candidate = confine(root, place, node=node, input_name=input_name, follow_links=False)
            except PathOutsideFolderError as exc:
                refused = refused or exc
                continue
            if os.path.exists(candidate):
                return _model_file_or_folder(str(candidate), node, input_name)
    if refused is not None:
        raise refused
    raise missing_model_error(kind, name, node=node, input_name=input_name, prompt=prompt)


def require_files(node: str, inputs: dict, prompt: dict | None = None) -> None:
    """Before a node loads files it finds by convention (LPIPS backbones, SMPL-X, style-space vectors): the one
    missing-model message for the first of them that is not in its folder."""
    from . import model_files
    for need in model_files.needed_files({node: {"class_type": node, "inputs": inputs}}):
        if model_files.find(need, model_dirs(need.folder)) is None:
            raise missing_model_error(need.folder, need.name, node=node, input_name=need.input_name, prompt=prompt)


def missing_model_error(kind: str, name: str, *, node: str, input_name: str, prompt: dict | None = None,
                        folder_empty: bool = False) -> NodeInputError:
    """The one missing-model message of the nodes (the runner prints the same `model_files.describe` lines).
    `folder_empty`: the COMBO showed its "(no files ...)" stand-in, and `name` is the usual file to get."""
    from . import model_files
    problem = (f"the '{kind}' model folder has no usable file." if folder_empty
               else f"model file {name!r} was not found.")
    fix = (("for example " if folder_empty else "") + model_files.describe(kind, name, model_dirs(kind))
           + "; then refresh ComfyUI (R) or rerun (outside ComfyUI the folders are under $HUMANGEN_MODELS_DIR or "
             "the runner's --models-dir)."
           + model_files.still_needed(prompt, model_dirs, besides=(kind, name)))
    return NodeInputError(node, input_name, problem, fix=fix)


ANNOTATIONS = {"[input]": "input", "[output]": "output", "[temp]": "temp"}


def split_annotation(name: str, default: str = "input") -> tuple[str, str]:
    """ComfyUI's annotated file names: 'x.png [output]' (also without the space) -> ('output', 'x.png'); a plain
    name -> (`default`, name). Folders: 'input', 'output', 'temp'."""
    for tag, folder in ANNOTATIONS.items():
        for suffix in (" " + tag, tag):
            if name.endswith(suffix):
                return folder, name[:-len(suffix)]
    return default, name


def annotated_path(name: str, *, node: str = "HumanGen", input_name: str = "image", default: str = "input"):
    """A file name as ComfyUI's file widgets give it: 'x.png' (in the `default` folder), 'x.png [output]',
    'x.png [input]' or 'x.png [temp]' (in that folder), subfolders allowed. Confined to that folder
    (`utils.paths.confine`): absolute paths, '..' and links out are refused."""
    from .paths import confine
    if not isinstance(name, str):
        raise NodeInputError(node, input_name, f"expects a file name, got {type(name).__name__}.")
    folder, text = split_annotation(name, default)
    root = {"input": input_dir, "output": output_dir, "temp": temp_dir}[folder]()
    return confine(root, text, node=node, input_name=input_name)


def progress(total: int, desc: str = "") -> Progress:
    return get().progress(total, desc)


def check_interrupt() -> None:
    get().check_interrupt()


def torch_device():
    return get().torch_device()


def offload_device():
    return get().offload_device()


def load_model(module):
    return get().load_model(module)


def core_upscale_model(descriptor):
    """The UPSCALE_MODEL as the host's core loader makes it (see ComfyHost.core_upscale_model)."""
    return get().core_upscale_model(descriptor)


def free_memory(nbytes: int = 0) -> None:
    get().free_memory(nbytes)


def metadata_disabled() -> bool:
    return get().metadata_disabled()


def output_dir() -> str:
    return get().output_dir()


def input_dir() -> str:
    return get().input_dir()


def temp_dir() -> str:
    return get().temp_dir()


@contextlib.contextmanager
def quiet_native_logs():
    """While the active host is quiet (the runner's --quiet), hold back what native code writes straight to file
    descriptor 2 (mediapipe's absl and TensorFlow Lite C++ logging: neither reads an environment variable nor
    Python's logging). The lines go to a temporary file and are replayed only if the block fails, so an error
    keeps its context. Does nothing otherwise: inside ComfyUI other threads share file descriptor 2."""
    if not get().quiet:
        yield
        return
    import sys
    import tempfile
    with contextlib.suppress(ImportError):  # mediapipe's Python side logs through absl
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))
                sys.stderr.flush()


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors on any device (CUDA, MPS, CPU allocator)."""
    import torch
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_backoff(fn: Callable[[int], Any], size: int, floor: int, *, what: str = "tile") -> Any:
    """Call `fn(size)`, halving `size` on out-of-memory down to `floor`, then re-raise."""
    while True:
        try:
            return fn(size)
        except Exception as exc:  # noqa: BLE001 - filtered by is_oom
            if not is_oom(exc) or size // 2 < floor:
                raise
            free_memory()
            size //= 2
            import logging
            logging.getLogger("humangen").warning("out of memory: retrying with %s size %d", what, size)


@contextlib.contextmanager
def interrupt_on_sigint():
    """Within the block, Ctrl-C sets the standalone interrupt flag (loops stop at their next check)."""
    import signal
    h = get()
    if not isinstance(h, StandaloneHost) or isinstance(h, ComfyHost) \
            or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if h.stop_requested.is_set():  # second Ctrl-C: stop hard
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        h.stop_requested.set()  # a first Ctrl-C after a job's time limit raised the flag is still a first
        h.interrupt_event.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        h.stop_requested.clear()


__all__: Iterable[str] = [
    "MODEL_FOLDERS", "Progress", "StandaloneHost", "ComfyHost", "get", "use", "reset", "in_comfyui", "model_dirs",
    "list_models", "model_path", "trust_file", "split_annotation", "annotated_path", "progress", "check_interrupt", "torch_device", "offload_device", "load_model",
    "free_memory", "output_dir", "input_dir", "temp_dir", "is_oom", "run_with_oom_backoff", "interrupt_on_sigint",
]
