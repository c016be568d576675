"""The pack's named exceptions. Messages name the node, the input and the fix, because users read them in the UI."""
from __future__ import annotations


class HumanGenError(Exception):
    """A problem the user can fix (bad input, missing model file, unsupported size)."""


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
