"""The README tells the truth: its set-up, test and runner commands are what the code accepts, every `run` example
runs in a fresh clone of the checkout with nothing beside it (weight-free workflows to completion, the others to
the missing-model message), the files it points at exist, and a fresh clone passes a fast subset of the tests.

The clone is the checkout's HEAD plus its uncommitted changes to tracked files; files git does not track are
not in it, exactly as for anyone who clones the repository.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from hgtest import ROOT, root_script
from humangen.runner.cli import build_parser, make_jobs
from humangen.runner.workflow import WorkflowError, declared_models_of, load_workflow

README = (ROOT / "README.md").read_text(encoding="utf-8")
launch = root_script("launch")
RUN_PREFIXES = (("python", ".", "run"), ("python3", "launch.py", "run"))
# README commands and the fast test files run in the clone (they read the golden fixtures and the README)
CLONE_SUBSET = ["tests/test_fixtures.py", "tests/test_ci.py", "tests/test_launch.py",
                "tests/test_continuous_render.py::test_canvas_grid_matches_upstream_fixture",
                "tests/test_stylegan_parity.py::test_architecture_attributes_and_keys"]


def sections() -> dict[str, str]:
    parts = re.split(r"^## (.+)\n", README, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def fenced_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks in `text`: comments dropped, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(" ".join(line.split()))
    return commands


def run_examples() -> list[list[str]]:
    """Every `python . run ...` / `python3 launch.py run ...` in the README (fenced or inline): the arguments after
    `run`, each distinct command once."""
    inline = re.findall(r"`(python3? [^`]*\brun [^`]*)`", re.sub(r"```.*?```", "", README, flags=re.S))
    found = fenced_commands(README) + inline
    examples = []
    for command in found:
        words = shlex.split(command)
        args = words[3:]
        if any(a == "..." or "<" in a or a.isupper() for a in args):
            continue  # a template such as `python . run ...`, not an example
        if tuple(words[:3]) in RUN_PREFIXES and args and args not in examples:
            examples.append(args)
    return examples


def _workflow_of(args: list[str]) -> str:
    return build_parser().parse_args(["run", *args]).workflow


def test_setup_section_is_one_command_that_sets_up_and_runs_the_main_job():
    assert fenced_commands(sections()["Set up"]) == [
        "python3 launch.py run workflows/photo_to_skeleton.json --input-dir workflows/assets --out output"]


def test_test_section_is_one_command_that_runs_the_whole_suite():
    (command,) = fenced_commands(sections()["Test"])
    words = shlex.split(command)
    assert words[:3] == ["python3", "launch.py", "test"]
    cmd, cwd = launch.command_line("test", words[3:], "PY")
    assert cmd == ["PY", "-m", "pytest", "-q"] and cwd == str(ROOT)  # no selection: pyproject's testpaths, all tests


def test_the_runner_section_has_examples_and_the_setup_command_is_one_of_them():
    examples = run_examples()
    assert len(fenced_commands(sections()["Headless runner"])) >= 3
    assert ["workflows/photo_to_skeleton.json", "--input-dir", "workflows/assets", "--out", "output"] in examples
    assert any(not declared_models_of(json.loads((ROOT / _workflow_of(a)).read_text())) for a in examples)
    assert any(declared_models_of(json.loads((ROOT / _workflow_of(a)).read_text())) for a in examples)


def test_every_concrete_set_and_batch_belongs_to_a_checked_command():
    """An override shown on its own cannot be checked against a workflow (the old `--set 3.seed=42` fitted
    none): every concrete one must be part of a full command. NODE_ID/INPUT/VALUE templates are fine."""
    checked = {" ".join(a) for a in run_examples()}
    for flag, value in re.findall(r"(--set|--batch)[ =]([^\s`*]+)", README):
        if re.search(r"NODE_ID|INPUT|VALUE", value):
            continue
        assert any(f"{flag} {value}" in c for c in checked), f"`{flag} {value}` is not part of a full command"


@pytest.mark.parametrize("args", run_examples(), ids=lambda a: " ".join(a)[:60])
def test_run_example_fits_its_workflow(args):
    """Every --set/--batch of the example names a node and an input of that workflow, with a valid value."""
    from humangen.runner.engine import Engine
    parsed = build_parser().parse_args(["run", *args])
    assert (ROOT / parsed.workflow).is_file()
    specs = Engine().specs()
    workflow = load_workflow(str(ROOT / parsed.workflow), specs)
    try:
        jobs = make_jobs(workflow.prompt, specs, parsed.sets, parsed.batches)
    except WorkflowError as exc:
        pytest.fail(f"README example does not fit {parsed.workflow}: {exc}")
    assert jobs


def test_readme_points_only_at_files_in_the_repository():
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    code = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", README, flags=re.S)) + fenced_commands(README)
    paths = [p for p in links if "://" not in p]
    repo_dirs = ("workflows/", "tests/", "docs/", "bench/", "runner/", "utils/", "nodes/", ".ci/", "shared/")
    made_at_run_time = {".ci/venv", ".ci/venv/"}  # CI's own virtual environment
    for span in code:
        words = span.split()
        for i, word in enumerate(words):
            word = word.split("::")[0].rstrip(".,;:)")
            if (word.startswith(repo_dirs) or re.fullmatch(r"models/[\w/*]+\.(py|json)", word)
                    or (i > 0 and words[i - 1] in ("python", "python3") and word.endswith(".py"))):
                paths.append(word)
    assert len(paths) > 20
    missing = sorted({p for p in paths if "<" not in p and p not in made_at_run_time
                      and not glob.glob(str(ROOT / p))})
    assert missing == [], f"the README points at files that are not in the repository: {missing}"


def test_install_and_launch_docstrings_name_readme_sections_that_exist():
    named = re.findall(r'"([^"]+)"', root_script("install").__doc__ + launch.__doc__)
    assert named and set(named) <= set(sections()), named


# ---- in a fresh clone --------------------------------------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUMANGEN_", "COMFYUI_")) and k != "PYTHONPATH"}
    env["HUMANGEN_NO_PROGRESS"] = "1"
    return env


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """`git clone` of this checkout into an empty folder (nothing beside it), with the uncommitted changes."""
    if shutil.which("git") is None:
        pytest.skip("needs git on PATH")
    if subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout: clone the repository to run the fresh-clone tests")
    dest = tmp_path_factory.mktemp("fresh") / "HumanGen"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=300)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", head.stdout.strip()], cwd=dest, check=True, timeout=120)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, capture_output=True, check=True).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=dest, input=diff, check=True, timeout=120)
    assert os.listdir(dest.parent) == ["HumanGen"]
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("args", run_examples(), ids=lambda a: " ".join(a)[:60])
def test_run_example_runs_in_a_fresh_clone(clone, args):
    workflow = json.loads((clone / _workflow_of(args)).read_text())
    needs = declared_models_of(workflow)
    proc = subprocess.run([sys.executable, ".", "run", *args], cwd=clone, env=_clean_env(), capture_output=True,
                          text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    if not needs:
        assert proc.returncode == 0, proc.stderr
        written = proc.stdout.split()
        if "--dry-run" not in args:
            assert written and all(os.path.isfile(p) and p.startswith(str(clone)) for p in written), proc.stdout
    else:  # runs nothing and names every file the workflow needs
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        for need in needs:
            assert need["name"] in proc.stderr, (need, proc.stderr)


@pytest.mark.slow
def test_fast_subset_of_the_tests_passes_in_a_fresh_clone(clone):
    """Guards against tests that read outside the checkout (the golden fixtures once lived beside it)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *CLONE_SUBSET],
                          cwd=clone, env=_clean_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary, summary
