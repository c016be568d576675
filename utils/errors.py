"""The pack's named exceptions. Messages name the node, the input and the fix, because users read them in the UI.

ComfyUI shows an error's type as `type(e).__module__ + "." + qualname` (execution.py `full_type_name`), so every
class here (and every subclass elsewhere in the pack) reports the short module name "HumanGen": the UI reads
"HumanGen.NodeInputError" instead of a long internal import path."""
from __future__ import annotations

UI_MODULE = "HumanGen"


class HumanGenError(Exception):
    """A problem the user can fix (bad input, missing model file, unsupported size)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__module__ = UI_MODULE


HumanGenError.__module__ = UI_MODULE


class NodeInputError(HumanGenError, ValueError):
    """A bad value on one node input: `NodeInputError("HumanGenX", "seed", "must be >= 0", fix="...")`."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str | None = None):
        self.node, self.input_name, self.problem, self.fix = node, input_name, problem, fix
        msg = f"{node}: input '{input_name}': {problem}"
        if fix:
            msg += f" Fix: {fix}"
        super().__init__(msg)


class UnsupportedCheckpointError(HumanGenError, ValueError):
    """A checkpoint whose format/architecture we do not recognise; the message lists what was looked for."""


class UnsafeCheckpointError(HumanGenError):
    """A checkpoint that would need code execution (a pickle global outside the allow-list)."""


class HumanGenInterrupted(HumanGenError):
    """Raised at an interrupt check outside ComfyUI (inside it, the host's own exception is raised)."""


class LimitExceededError(HumanGenError, ValueError):
    """An input larger than the pack accepts (image size, archive size, text length): refused before any work."""


def for_input(exc: BaseException, node: str, input_name: str, fix: str | None = None) -> NodeInputError:
    """`exc` restated as a NodeInputError naming `node` and `input_name` (an existing NodeInputError is kept)."""
    if isinstance(exc, NodeInputError):
        return exc
    problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    for prefix in (f"{node}: ",):
        if problem.startswith(prefix):
            problem = problem[len(prefix):]
    return NodeInputError(node, input_name, problem if problem.endswith(".") else problem + ".",
                          fix=getattr(exc, "fix", None) or fix)
