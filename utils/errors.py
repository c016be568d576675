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
        msg = f"{node}: input '{input_name}': {problem}" if input_name else f"{node}: {problem}"
        if fix and "Fix:" not in problem:  # a restated error may carry its own, more specific fix
            msg += f" Fix: {fix}"
        super().__init__(msg)


class LimitExceededError(NodeInputError):
    """An input larger than the pack accepts (image size, archive size, text length): refused before any work."""


class UnsupportedCheckpointError(HumanGenError, ValueError):
    """A checkpoint whose format/architecture we do not recognise; the message lists what was looked for."""


class UnsafeCheckpointError(HumanGenError):
    """A checkpoint that would need code execution (a pickle global outside the allow-list)."""


class HumanGenInterrupted(HumanGenError):
    """Raised at an interrupt check outside ComfyUI (inside it, the host's own exception is raised)."""


def shown(value, limit: int = 60) -> str:
    """`value` quoted for a one-line message, cut to about `limit` characters with its full length noted: a value
    from a workflow or the command line can be megabytes long. Text is repr'd (newlines and escapes stay visible,
    never forge a line); numbers are written as digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        if value.bit_length() > 13000:  # str() refuses ints over 4300 digits
            return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
        text = str(value)
        return f"{text[:20]}...({len(text.lstrip('-'))} digits)"
    if not isinstance(value, str):
        value = str(value)
        return value if len(value) <= limit else f"{value[:limit]}...({len(value)} characters)"
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}...({len(value)} characters)"


def one_line(text, limit: int = 300) -> str:
    """Untrusted text (a node id, a class name, a server's message) for one line of a message: control characters
    (newlines, terminal escapes) become '?', so it can neither forge a line nor drive the terminal, and it is cut to
    `limit` characters with its length noted."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The first line of an exception's (or a text's) message, at most `limit` characters: what a one-line error
    quotes from a library's multi-line message. A line about torch's `weights_only` is restated: torch's own text
    advises turning the safe loader off, which HumanGen never passes on."""
    line = (str(exc).strip().splitlines() or [""])[0][:limit]
    return "refused by the weights-only loader" if "weights_only" in line else line


def for_input(exc: BaseException, node: str, input_name: str, fix: str | None = None) -> NodeInputError:
    """`exc` restated as an error of the same kind naming `node` and `input_name` (a NodeInputError that already
    names this node is kept). Helpers deep in utils/ raise with a generic node name; the node that called them
    knows which of its inputs the file or value came from."""
    if isinstance(exc, NodeInputError) and exc.node == node:
        return exc
    problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    for said in (f"{node}: ", f"input '{input_name}': "):  # already named by the deeper error: said once
        if problem.startswith(said):
            problem = problem[len(said):]
    problem = problem if problem.rstrip().endswith(".") else problem + "."
    fix = getattr(exc, "fix", None) or fix
    if isinstance(exc, NodeInputError):
        return type(exc)(node, input_name, problem, fix)
    if isinstance(exc, HumanGenError) and type(exc) is not HumanGenError:  # keep the kind the UI shows
        try:
            out = type(exc)(f"{node}: input '{input_name}': {problem}" + (f" Fix: {fix}" if fix and "Fix:" not in
                                                                           problem else ""))
            out.node, out.input_name, out.problem, out.fix = node, input_name, problem, fix
            return out
        except TypeError:
            pass
    return NodeInputError(node, input_name, problem, fix)
