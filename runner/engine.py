"""The in-process executor: validates an API prompt and runs it with the pack's nodes (plus the core-compatible
image nodes when the ComfyUI host is absent), like ComfyUI's own executor does:

- only nodes that feed an output node (OUTPUT_NODE) run, in topological order; a cycle is an error;
- validation names node id, class and input: unknown node, missing input, bad link, wrong type, COMBO value
  not in the list, number out of range, VALIDATE_INPUTS failures;
- outputs are lists (OUTPUT_IS_LIST / INPUT_IS_LIST semantics of the host: a node is mapped over list inputs);
- results of unchanged nodes are reused across the jobs of a batch (same class, constants, upstream signature
  and IS_CHANGED value), except NOT_IDEMPOTENT nodes; entries of nodes absent from the latest job are dropped;
- `host.check_interrupt()` runs between nodes; HumanGenInterrupted stops the job;
- `time_limit(...)` stops a job that runs past its time at the next such check (every progress step of a long
  node, and between nodes), as JobTimedOut.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..utils import host
from ..utils.errors import HumanGenInterrupted, one_line, shown
from ..utils.limits import plain_int
from .specs import NodeSpec, spec_from_class, types_match
from .workflow import WorkflowError, _id_key, check_prompt, graph_order, is_link

if TYPE_CHECKING:
    from .remote import Budget


class NodeExecutionError(RuntimeError):
    """A node raised while running; names node id and class and keeps the original exception as __cause__."""

    def __init__(self, node_id: str, class_type: str, exc: BaseException, outputs: dict | None = None):
        self.node_id, self.class_type, self.original = node_id, class_type, exc
        self.outputs = dict(outputs or {})  # UI outputs of the nodes that ran before: files they saved are kept
        super().__init__(f"node {one_line(node_id, 40)} ({one_line(class_type, 80)}) failed: "
                         f"{type(exc).__name__}: {exc}")


class JobTimedOut(RuntimeError):
    """A job ran past its time limit and was stopped; names what set the limit and the node that was running, and
    keeps the UI outputs of the nodes that ran before (so that the runner can list the files they saved)."""

    def __init__(self, reason: str, node: tuple[str, str] | None, outputs: dict | None = None):
        self.outputs = dict(outputs or {})
        where = f"in node {node[0]} ({node[1]})" if node else "between nodes"
        super().__init__(f"stopped {where}: {reason} has passed")


def job_budget(args) -> "Budget | None":
    """The time a job of the run may take from now: the run's --timeout, cut short by its --deadline (None: no
    limit)."""
    from .remote import Budget
    run_budget = getattr(args, "run_budget", None)
    if getattr(args, "timeout", None) is None:
        return run_budget
    return Budget.after(args.timeout, f"the job's --timeout of {args.timeout:g} s").sooner(run_budget)


@contextlib.contextmanager
def time_limit(standalone: host.StandaloneHost, budget: "Budget | None"):
    """Within the block, raise the standalone host's interrupt flag when `budget` (runner/remote.py; None: no limit)
    runs out, so the running node stops at its next interrupt check; the interruption leaves the block as
    JobTimedOut naming the budget's reason, and the flag is lowered again for the next job. A Ctrl-C (the host's
    `stop_requested`), before or after the time ran out, wins: the interruption stays one and the flag stays
    raised. A node that never checks (one long library call) finishes first."""
    if budget is None:
        yield
        return
    expired = threading.Event()

    def expire():
        if not standalone.interrupt_event.is_set():  # a Ctrl-C already raised it: that one wins
            expired.set()
            standalone.interrupt_event.set()

    def timed_out() -> bool:
        return expired.is_set() and not standalone.stop_requested.is_set()

    timer = threading.Timer(max(budget.remaining(), 0.0), expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except HumanGenInterrupted as exc:
        if not timed_out():
            raise
        raise JobTimedOut(budget.reason, getattr(exc, "node", None), getattr(exc, "outputs", None)) from None
    finally:
        timer.cancel()
        timer.join()  # an expiry in progress finishes before the flag is lowered
        if timed_out():
            standalone.interrupt_event.clear()


def registry(extra: dict[str, type] | None = None) -> dict[str, type]:
    """Node classes the engine knows: the pack's, plus core-compatible image nodes when the host is absent."""
    import sys
    pack = sys.modules[__package__.rsplit(".", 1)[0]]
    classes: dict[str, type] = {}
    if host.in_comfyui():  # the host's own core nodes
        classes.update(host.get().core_node_classes(("LoadImage", "SaveImage", "PreviewImage", "ImageScale")))
    else:
        from .core_nodes import NODE_CLASS_MAPPINGS as core
        classes.update(core)
    classes.update(pack.NODE_CLASS_MAPPINGS)
    classes.update(extra or {})
    return classes


@dataclass
class JobResult:
    outputs: dict[str, dict] = field(default_factory=dict)  # node id -> merged "ui" dict (images: [...])
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0


_is_link = is_link


class Engine:
    def __init__(self, classes: dict[str, type] | None = None):
        self.classes = classes if classes is not None else registry()
        self._specs: dict[str, NodeSpec] = {}
        self._cache: dict[str, tuple[Any, list]] = {}  # node id -> (signature, outputs)
        self._instances: dict[tuple[str, str], Any] = {}
        self.on_node: Callable[[str, str, int, int], None] | None = None  # (node id, class, index, total)
        self.running: tuple[str, str] | None = None  # (node id, class) of the node executing now

    # ---- definitions -----------------------------------------------------------------------------------------
    def spec(self, class_type: str) -> NodeSpec:
        if class_type not in self._specs:
            self._specs[class_type] = spec_from_class(class_type, self.classes[class_type])
        return self._specs[class_type]

    def specs(self) -> dict[str, NodeSpec]:
        return {c: self.spec(c) for c in self.classes}

    def refresh(self) -> None:
        """Forget INPUT_TYPES snapshots (file lists change when folders change)."""
        self._specs.clear()

    # ---- validation ------------------------------------------------------------------------------------------
    def validate(self, prompt: dict[str, dict]) -> list[str]:
        """Check the prompt; returns the execution order (node ids). Raises WorkflowError on the first problem."""
        self.refresh()
        for nid, node in prompt.items():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
                raise WorkflowError("not a node (needs class_type and inputs)", nid)
            if not isinstance(node.get("inputs", {}), dict):
                raise WorkflowError("'inputs' must be an object {\"input name\": value}", nid, node["class_type"])
        outputs = [nid for nid in sorted(prompt, key=_id_key)
                   if prompt[nid]["class_type"] in self.classes and self.spec(prompt[nid]["class_type"]).output_node]
        check_prompt(prompt, self.classes, roots=outputs)
        if not outputs:
            raise WorkflowError("the workflow has no output node (SaveImage, PreviewImage, ...); nothing would run")
        order = graph_order(prompt, outputs)
        for nid in order:
            self._validate_node(prompt, nid)
        return order

    def _validate_node(self, prompt: dict[str, dict], nid: str) -> None:
        node = prompt[nid]
        ctype = node["class_type"]
        spec = self.spec(ctype)
        cls = self.classes[ctype]
        inputs = node.get("inputs") or {}
        validate_fn = getattr(cls, "VALIDATE_INPUTS", None)
        validate_args: set[str] = set()
        skip_types = False
        if validate_fn is not None:
            params = inspect.signature(validate_fn).parameters
            validate_args = {p for p in params if p not in ("self", "cls")}
            skip_types = "input_types" in params
        for inp in spec.inputs:
            if inp.name not in inputs:
                if inp.required:
                    if inp.is_widget and "default" in inp.options:
                        continue  # filled from the default at run time
                    raise WorkflowError("required input is missing" + (
                        f" (connect a {inp.type} output to it)" if not inp.is_widget else ""), nid, ctype, inp.name)
                continue
            value = inputs[inp.name]
            if _is_link(value):
                src, slot = str(value[0]), int(value[1])
                src_spec = self.spec(prompt[src]["class_type"])
                if not 0 <= slot < len(src_spec.outputs):
                    raise WorkflowError(f"linked to output {slot} of node {one_line(src, 40)} "
                                        f"({one_line(prompt[src]['class_type'], 80)}), "
                                        f"which has {len(src_spec.outputs)} outputs", nid, ctype, inp.name)
                got = src_spec.outputs[slot]
                want = inp.type
                if not skip_types and not types_match(want, got):
                    raise WorkflowError(f"wrong type: expects {want}, but is linked to a {got} output (output "
                                        f"{slot} of node {one_line(src, 40)} "
                                        f"{one_line(prompt[src]['class_type'], 80)})", nid, ctype,
                                        inp.name)
                continue
            if not inp.is_widget and inp.type not in ("*",) and not inp.options.get("forceInput"):
                raise WorkflowError(f"wrong type: expects a link from a {inp.type} output, got the value "
                                    f"{shown(value)}", nid, ctype, inp.name)
            if inp.name in validate_args:
                continue  # the node validates this one itself (like the host)
            self._check_value(nid, ctype, inp, value, inputs)
        if validate_fn is not None:
            args = {k: inputs[k] for k in validate_args if k in inputs and not _is_link(inputs[k])}
            if skip_types:
                args["input_types"] = {k: None for k in inputs if _is_link(inputs[k])}
            try:
                result = validate_fn(**args)
            except Exception as exc:  # noqa: BLE001 - a validation crash is a validation failure
                result = f"{type(exc).__name__}: {exc}"
            if result is not True:
                raise WorkflowError(f"invalid input: {result}", nid, ctype)

    @staticmethod
    def _check_value(nid, ctype, inp, value, inputs) -> None:
        def fail(problem: str):
            raise WorkflowError(problem, nid, ctype, inp.name)

        if inp.type == "INT":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    isinstance(value, float) and not value.is_integer()):
                if isinstance(value, str):
                    try:
                        value = int(value)
                    except ValueError:
                        fail(f"wrong type: expects an integer, got {shown(value)}")
                else:
                    fail(f"wrong type: expects an integer, got {shown(value)}")
        elif inp.type == "FLOAT":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    fail(f"wrong type: expects a number, got {shown(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"wrong type: expects a finite number, got {value}")
        elif inp.type == "BOOLEAN":
            if not isinstance(value, bool):
                fail(f"wrong type: expects true or false, got {shown(value)}")
        elif inp.type == "STRING":
            if not isinstance(value, str):
                fail(f"wrong type: expects a string, got {shown(value)}")
        elif inp.type == "COMBO":
            if value not in (inp.choices or []):
                listed = ", ".join(repr(c) for c in (inp.choices or [])[:20])
                more = "" if len(inp.choices or []) <= 20 else f", ... ({len(inp.choices)} in all)"
                fail(f"value {shown(value)} is not in the list: [{listed}{more}]")
        if inp.type in ("INT", "FLOAT"):
            lo, hi = inp.options.get("min"), inp.options.get("max")
            # compared as Python numbers (exact for ints of any size; float() of a 400-digit int overflows)
            if lo is not None and value < lo:
                fail(f"value {shown(value)} is smaller than the minimum {lo}")
            if hi is not None and value > hi:
                fail(f"value {shown(value)} is bigger than the maximum {hi}")

    # ---- execution -------------------------------------------------------------------------------------------
    def run(self, prompt: dict[str, dict], *, extra_pnginfo: dict | None = None,
            order: list[str] | None = None) -> JobResult:
        """Validate (unless `order` is given) and execute one API prompt."""
        t0 = time.perf_counter()
        order = order or self.validate(prompt)
        result = JobResult()
        try:
            self._execute(prompt, order, result, extra_pnginfo)
        except HumanGenInterrupted as exc:
            exc.outputs = dict(result.outputs)  # files saved before the interruption are kept and reported
            exc.node = self.running
            raise
        finally:
            self.running = None
        result.seconds = time.perf_counter() - t0
        return result

    def _execute(self, prompt: dict[str, dict], order: list[str], result: JobResult,
                 extra_pnginfo: dict | None) -> None:
        values: dict[str, list] = {}  # node id -> list of output lists
        signatures: dict[str, Any] = {}
        for index, nid in enumerate(order):
            self.running = None
            host.check_interrupt()
            node = prompt[nid]
            ctype = node["class_type"]
            self.running = (nid, ctype)
            cls = self.classes[ctype]
            spec = self.spec(ctype)
            if self.on_node is not None:
                self.on_node(nid, ctype, index, len(order))
            try:
                signature = self._signature(prompt, nid, signatures, cls)
            except HumanGenInterrupted:
                raise
            except Exception as exc:  # noqa: BLE001 - IS_CHANGED failing is this node's failure
                raise NodeExecutionError(nid, ctype, exc, result.outputs) from exc
            signatures[nid] = signature
            cached = self._cache.get(nid)
            if cached is not None and signature is not None and cached[0] == signature:
                values[nid] = cached[1]
                result.cached.append(nid)
                continue
            kwargs_lists = self._gather(prompt, nid, spec, values, extra_pnginfo)
            try:
                outputs, ui = self._call(nid, ctype, cls, kwargs_lists)
            except HumanGenInterrupted:
                raise
            except KeyboardInterrupt:
                raise HumanGenInterrupted("processing interrupted") from None
            except Exception as exc:  # noqa: BLE001 - reported with node id and class
                if type(exc).__name__ == "InterruptProcessingException":
                    raise HumanGenInterrupted("processing interrupted") from exc
                raise NodeExecutionError(nid, ctype, exc, result.outputs) from exc
            values[nid] = outputs
            result.executed.append(nid)
            if ui:
                result.outputs[nid] = ui
            if signature is not None:
                self._cache[nid] = (signature, outputs)
        for nid in set(self._cache) - set(order):  # keep the cache to the nodes of the latest job
            del self._cache[nid]

    def _signature(self, prompt, nid, signatures, cls):
        """What decides whether a cached output is still valid; None = never cache."""
        if getattr(cls, "NOT_IDEMPOTENT", False):
            return None
        node = prompt[nid]
        parts = []
        for name, value in sorted((node.get("inputs") or {}).items()):
            if _is_link(value):
                upstream = signatures.get(str(value[0]))
                if upstream is None:
                    return None
                parts.append((name, "link", upstream, int(value[1])))
            else:
                parts.append((name, "value", _freeze(value)))
        changed = None
        is_changed = getattr(cls, "IS_CHANGED", None)
        if is_changed is not None:
            params = inspect.signature(is_changed).parameters
            accepts_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
            args = {k: v for k, v in (node.get("inputs") or {}).items()
                    if not _is_link(v) and (accepts_all or k in params)}
            changed = is_changed(**args)
            if isinstance(changed, float) and math.isnan(changed):
                return None
            changed = _freeze(changed)
        return (node["class_type"], tuple(parts), changed)

    def _gather(self, prompt, nid, spec: NodeSpec, values, extra_pnginfo) -> dict[str, list]:
        node = prompt[nid]
        inputs = node.get("inputs") or {}
        kwargs: dict[str, list] = {}
        for inp in spec.inputs:
            if inp.name in inputs:
                value = inputs[inp.name]
                if _is_link(value):
                    kwargs[inp.name] = values[str(value[0])][int(value[1])]
                else:
                    kwargs[inp.name] = [_typed(inp.type, value)]
            elif inp.required and "default" in inp.options:
                kwargs[inp.name] = [inp.options["default"]]
        for name, kind in spec.hidden.items():
            if kind == "UNIQUE_ID":
                kwargs[name] = [nid]
            elif kind == "PROMPT":
                kwargs[name] = [prompt]
            elif kind == "EXTRA_PNGINFO":
                kwargs[name] = [extra_pnginfo]
            else:
                kwargs[name] = [None]
        return kwargs

    def _call(self, nid, ctype, cls, kwargs_lists: dict[str, list]):
        key = (nid, ctype)
        obj = self._instances.get(key)
        if obj is None:
            obj = self._instances[key] = cls()
        fn = getattr(obj, cls.FUNCTION)
        n_out = len(getattr(cls, "RETURN_TYPES", ()))
        out_is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", ())) or (False,) * n_out
        outputs: list[list] = [[] for _ in range(n_out)]
        ui: dict[str, list] = {}

        def absorb(ret, as_list_call: bool):
            if isinstance(ret, dict):
                for k, v in (ret.get("ui") or {}).items():
                    ui.setdefault(k, []).extend(v if isinstance(v, list) else [v])
                ret = ret.get("result", ())
            ret = tuple(ret or ())
            if len(ret) != n_out:
                raise TypeError(f"{cls.FUNCTION} returned {len(ret)} values, RETURN_TYPES declares {n_out}")
            for i, v in enumerate(ret):
                if out_is_list[i] if i < len(out_is_list) else False:
                    outputs[i].extend(v)
                else:
                    outputs[i].append(v)

        import torch  # here, not at module level: the pack import must not load torch

        # ComfyUI executes every node inside torch.inference_mode(); so does the runner, so that a node needing
        # autograd (or in-place updates of its inputs) fails here exactly as it would in ComfyUI
        with torch.inference_mode():
            if getattr(cls, "INPUT_IS_LIST", False):
                absorb(fn(**kwargs_lists), True)
            else:
                count = max((len(v) for v in kwargs_lists.values()), default=1)
                if any(len(v) == 0 for v in kwargs_lists.values()):
                    count = 0
                for i in range(count):
                    host.check_interrupt()
                    absorb(fn(**{k: v[min(i, len(v) - 1)] for k, v in kwargs_lists.items()}), False)
        return outputs, ui


def _typed(kind: str, value: Any) -> Any:
    if kind == "INT" and plain_int(value.strip() if isinstance(value, str) else None, signed=True) is not None:
        return int(value)
    if kind == "INT" and isinstance(value, (float, str)) and not isinstance(value, bool):
        return int(float(value))
    if kind == "FLOAT" and isinstance(value, (int, str)) and not isinstance(value, bool):
        return float(value)
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)
