"""Set HumanGen up in a virtual environment when needed, then run a workflow or the tests (README: "Set up", "Test").

    python3 launch.py run WORKFLOW.json [runner options]   # the headless runner: `python . run ...`
    python3 launch.py test [pytest options]                # the whole test suite: `pytest -q ...`
    python3 launch.py setup [--reinstall]                  # only the set-up

The environment: the active virtual environment when there is one, otherwise the checkout's own `.venv` (created on
first use). The set-up is `install.py --dev --if-needed` inside it: pip runs only when the files it installs from
changed since the last successful install (a stamp inside the environment records their hash), so a second call
starts at once. `--reinstall` (or deleting `.venv`) installs again.
"""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
OWN_VENV = os.path.join(ROOT, ".venv")
USAGE = __doc__.split("\n\n")[1]


def venv_python(env_dir: str) -> str:
    if os.name == "nt":
        return os.path.join(env_dir, "Scripts", "python.exe")
    return os.path.join(env_dir, "bin", "python")


def active_python() -> str | None:
    """The interpreter of the active virtual environment, or None when none is active."""
    if sys.prefix != sys.base_prefix:  # run with a venv's python (activated, or called by its path)
        return sys.executable
    env = os.environ.get("VIRTUAL_ENV")
    if env and os.path.isfile(venv_python(env)):
        return venv_python(env)
    return None


def ensure_own_venv(env_dir: str = OWN_VENV) -> str:
    """Create `env_dir` with pip unless it already holds an interpreter; return that interpreter."""
    python = venv_python(env_dir)
    if os.path.isfile(python):
        return python
    print(f"[HumanGen] creating the virtual environment {env_dir}", flush=True)
    done = subprocess.run([sys.executable, "-m", "venv", env_dir])
    if done.returncode != 0 or not os.path.isfile(python):
        raise SystemExit(f"[HumanGen] error: `{sys.executable} -m venv {env_dir}` failed. Python's venv module with "
                         "pip is needed (Debian/Ubuntu: `apt-get install python3-venv`); or activate a virtual "
                         "environment of your own and run this again.")
    return python


def setup(python: str, reinstall: bool = False) -> None:
    cmd = [python, os.path.join(ROOT, "install.py"), "--dev"] + ([] if reinstall else ["--if-needed"])
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit("[HumanGen] error: the set-up failed (see pip's messages above); fix the cause and run the "
                         "same command again (it resumes).")


def _call(cmd: list[str], cwd: str | None = None) -> int:
    proc = subprocess.Popen(cmd, cwd=cwd)
    while True:
        try:  # Ctrl-C reaches the child too (same process group): wait for it to stop cleanly
            return proc.wait()
        except KeyboardInterrupt:
            continue


def command_line(command: str, rest: list[str], python: str) -> tuple[list[str], str | None]:
    """What `launch.py run|test ...` runs inside the environment, and where: `run` is the headless runner
    (`python . run ...`, from the current folder), `test` is `pytest -q ...` from the checkout."""
    if command == "run":
        return [python, ROOT, "run", *rest], None
    if command == "test":
        return [python, "-m", "pytest", "-q", *rest], ROOT
    raise ValueError(command)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "test", "setup"):
        if argv and argv[0] not in ("-h", "--help"):
            print(f"[HumanGen] error: unknown command {argv[0][:80]!r}; the commands are run, test and setup",
                  file=sys.stderr)
        print("usage:\n" + USAGE, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    command, rest = argv[0], argv[1:]
    python = active_python() or ensure_own_venv()
    setup(python, reinstall=command == "setup" and "--reinstall" in rest)
    if command == "setup":
        print(f"[HumanGen] ready: {python}", flush=True)
        return 0
    cmd, cwd = command_line(command, rest, python)
    return _call(cmd, cwd)


if __name__ == "__main__":
    sys.exit(main())
