"""Command line of the headless runner: `python <pack-dir> run WORKFLOW.json [options]`
(also `python -m humangen run ...` and the `humangen` console script when installed).

Exit status: 0 all jobs succeeded (or --dry-run found the workflow valid), 1 a job failed while running,
2 bad arguments / invalid workflow / missing model files (nothing ran), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Sequence

from ..utils import host
from ..utils.errors import HumanGenError, HumanGenInterrupted, one_line, shown
from ..utils.paths import PathOutsideFolderError, confine
from .workflow import (MAX_TEXT_CHARS, WorkflowError, check_prompt, coerce, expand_sweep, load_workflow,
                       parse_assignment, targets)

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
SERVER_TIMEOUT_S = 3600.0  # --timeout of a job on a server or a Ray worker when none is given


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="humangen", description="Run ComfyUI workflows headlessly with the HumanGen nodes.",
        epilog="Exit status: 0 ok, 1 a job failed, 2 invalid workflow/arguments/missing models, 130 interrupted.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a workflow (UI or API format), optionally as a batch")
    _run_options(run)
    _run_options(sub.add_parser("validate", help="check a workflow and list its jobs (same as run --dry-run)"))

    conv = sub.add_parser("convert", help="convert a UI workflow to the API prompt format (prints JSON)")
    conv.add_argument("workflow")
    conv.add_argument("-o", "--output", default=None, help="write to this file instead of stdout (never replaced "
                      "unless --overwrite)")
    conv.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")
    conv.add_argument("--server", dest="servers", action="append", default=[], metavar="URL",
                      help="use this server's node definitions (/object_info)")
    conv.add_argument("--input-dir", default="input")

    mod = sub.add_parser("models", help="list the model files workflows need: folder, file, present or missing, "
                                        "download link")
    mod.add_argument("workflows", nargs="+", help="workflow JSON files (UI or API format)")
    mod.add_argument("--models-dir", default=None, help="model root outside ComfyUI (default $HUMANGEN_MODELS_DIR "
                                                        "or ./models)")
    mod.add_argument("--write", action="store_true",
                     help="rewrite each UI workflow's top-level `models` list (what ComfyUI's missing-models panel "
                          "reads) from HumanGen's model table")
    return parser


def _positive(unit: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite number of {unit}")
        return value
    return parse


_seconds = _positive("seconds")


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("workflow", help="workflow JSON: ComfyUI UI format (Save) or API format (Export (API))")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override an input (repeatable); typed by the input's declared type. "
                          "INPUT=VALUE without a node id sets it on every node that has that widget")
    run.add_argument("--batch", dest="batches", action="append", default=[], metavar="[NODE_ID.]INPUT=VALUES",
                     help="sweep an input over values: 1-100, 1,3,5-8 (integers) or a,b,c; several --batch "
                          "options make every combination; one job per value")
    run.add_argument("--out", default="output", help="folder for saved images (default ./output)")
    run.add_argument("--input-dir", default="input", help="where LoadImage looks for files (default ./input)")
    run.add_argument("--models-dir", default=None,
                     help="root of the model folders (<dir>/<kind>; default $HUMANGEN_MODELS_DIR or ./models)")
    run.add_argument("--server", dest="servers", action="append", default=[], metavar="URL",
                     help="run on a ComfyUI server instead of in-process (repeatable: jobs are spread over them)")
    run.add_argument("--timeout", type=_seconds, default=None,
                     help="wall-clock limit in seconds for one job: on a server, upload, run and download (default "
                          f"{SERVER_TIMEOUT_S:g}); in-process, the job stops at its next interrupt check and fails "
                          "(default: no limit)")
    run.add_argument("--deadline", type=_seconds, default=None,
                     help="wall-clock limit in seconds for the whole run; jobs not finished by then fail")
    run.add_argument("--max-download-mb", type=_positive("MiB"), default=1024.0,
                     help="largest output file accepted from a server, in MiB (default 1024)")
    run.add_argument("--device", default=None, help="torch device in-process (default: cuda if available)")
    run.add_argument("--dry-run", action="store_true", help="validate every job and list them; run nothing")
    run.add_argument("--keep-going", action="store_true", help="continue with the next job after a failure")
    run.add_argument("--quiet", action="store_true",
                     help="no progress bars: one line per job instead (also HUMANGEN_NO_PROGRESS=1)")
    _batch_options(run)


def _batch_options(run: argparse.ArgumentParser) -> None:
    """Keyed, resumable runs (runner/manifest.py) and the Ray engine (runner/ray_engine.py)."""
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: in-process (default); ray: spread the jobs over a Ray cluster (pip install "
                          "'ray[client]==2.60.*'); outputs are named after each job's key and listed in manifest.jsonl")
    run.add_argument("--resume", action="store_true",
                     help="continue a keyed run in --out: jobs listed in its manifest.jsonl are skipped (with the "
                          "local engine, --resume also starts such a run)")
    ray_opts = run.add_argument_group("Ray engine (--engine ray)")
    ray_opts.add_argument("--address", default=None, metavar="auto|HOST:PORT|ray://HOST:10001",
                          help="the Ray cluster (default $RAY_ADDRESS, else a local Ray started for this run)")
    ray_opts.add_argument("--workers", type=int, default=None, metavar="N",
                          help="workers (each loads the models once; default: as many as the cluster holds)")
    ray_opts.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                          help="GPUs each worker takes (default 1 when the cluster has GPUs, else 0)")
    ray_opts.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C", help="CPUs each worker takes")
    ray_opts.add_argument("--max-attempts", type=int, default=3, metavar="K",
                          help="tries of a job whose worker dies; then it goes to failures.jsonl (default 3)")
    ray_opts.add_argument("--shared-out", action="store_true",
                          help="--out is on storage every node shares: workers write there and the driver links "
                               "the files in, instead of receiving their bytes")


# ---- jobs --------------------------------------------------------------------------------------------------------
MAX_JOBS = 100_000  # per run; a larger sweep is almost always a typo (split it over several runs otherwise)


class Jobs:
    """The jobs of a run: the workflow after --set, and the --batch axes (the first outermost). Jobs are made one at
    a time when iterated, so a long sweep starts at once and holds one job in memory, not all of them."""

    def __init__(self, base: dict, axes: list[tuple[str, list, str, Sequence]]):
        self.base, self.axes = base, axes  # axes: (label, [(node id, type)], input name, values)
        self.total = 1
        for axis in axes:
            self.total *= len(axis[3])

    def __len__(self) -> int:
        return self.total

    def job(self, indices: Sequence[int]) -> tuple[str, dict]:
        job = json.loads(json.dumps(self.base))
        labels = []
        for (label, hits, name, values), i in zip(self.axes, indices):
            value = values[i]
            for nid, _ in hits:
                job[nid]["inputs"][name] = value
            labels.append(f"{one_line(label, 60)}={one_line(value, 60)}")  # a label is for reading: kept short
        return " ".join(labels), job

    def _indices(self, k: int) -> list[int]:
        indices = []
        for axis in reversed(self.axes):  # the last axis varies fastest
            k, i = divmod(k, len(axis[3]))
            indices.append(i)
        return indices[::-1]

    def __iter__(self):
        for k in range(self.total):
            yield self.job(self._indices(k))

    def representatives(self):
        """(job index, label, prompt) of the jobs validation must see: every axis at its first value, then each
        axis's listed values and range ends with the others at their first value (the sum of the axes, not their
        product)."""
        seen = set()
        combos = [[0] * len(self.axes)]
        for a, axis in enumerate(self.axes):
            for i in axis[3].representatives() if hasattr(axis[3], "representatives") else range(len(axis[3])):
                combo = [0] * len(self.axes)
                combo[a] = i
                combos.append(combo)
        for combo in combos:
            if tuple(combo) not in seen:
                seen.add(tuple(combo))
                k = 0
                for axis, i in zip(self.axes, combo):
                    k = k * len(axis[3]) + i
                yield (k, *self.job(combo))


def _assignment_label(text: str, limit: int = 100) -> str:
    """A --set/--batch argument as messages quote it: whole when short, else its target and a cut value (the value
    itself is quoted, shortened, by the message)."""
    if len(text) <= limit and text.isprintable():
        return text
    target, _, value = text.partition("=")
    target = target.strip() if len(target) <= 60 and target.isprintable() else shown(target.strip())
    return f"{target}={value[:20] if value[:20].isprintable() else ''}...({len(value)} characters)"


def make_jobs(prompt: dict, specs: dict, sets: Sequence[str], batches: Sequence[str]) -> Jobs:
    """Apply --set overrides (the result is checked like a workflow file), then describe the --batch sweeps
    (cartesian product) as lazily made (label, prompt) jobs; more than MAX_JOBS jobs are refused."""
    base = json.loads(json.dumps(prompt))
    for text in sets:
        node_id, name, value = parse_assignment(text, "--set")
        flag = f"--set {_assignment_label(text)}"
        for nid, kind in targets(base, specs, node_id, name, flag):
            base[nid]["inputs"][name] = coerce(value, kind, where=f"{flag}: ")
    check_prompt(base, None)
    axes = []
    total = 1
    for text in batches:
        node_id, name, value = parse_assignment(text, "--batch")
        flag = f"--batch {_assignment_label(text)}"
        hits = targets(base, specs, node_id, name, flag)
        values = expand_sweep(value, hits[0][1], where=f"{flag}: ")
        for v in values.representatives():
            check_value = values[v]
            if isinstance(check_value, str) and len(check_value) > MAX_TEXT_CHARS:
                raise WorkflowError(f"--batch {text[:40]}...: a value is longer than {MAX_TEXT_CHARS} characters")
        total *= values.size
        if total > MAX_JOBS:
            raise WorkflowError(f"{flag}: {'this sweep makes' if len(axes) == 0 else 'the sweeps make'} "
                                f"{total} jobs; at most {MAX_JOBS} are run at once (split the sweep over several "
                                "runs)")
        label = f"{node_id}.{name}" if node_id else name
        axes.append((label, hits, name, values))
    return Jobs(base, axes)


def _model_dirs(folder: str) -> list[str]:
    try:
        return host.model_dirs(folder)
    except KeyError:  # a folder of core ComfyUI or another pack, declared in the workflow's `models`: beside
        # HumanGen's own, and never outside the models root (the name comes from the workflow file)
        root = os.path.dirname(host.model_dirs("stylegan")[0])
        return [str(confine(root, folder, node="workflow models", input_name="directory"))]


def check_models(prompt: dict, declared: list[dict] | None = None) -> list[str]:
    """One line per missing model file of the workflow: the file, the folder it goes in, a direct link and its
    licence (utils.model_files), the node that needs it. Files HumanGen does not know take their link from the
    workflow's own `models` metadata."""
    from ..utils import model_files
    declared = declared or []
    links = {(m["directory"], m["name"]): m.get("url") for m in declared}
    lines = []
    seen = set()
    for need in model_files.needed_files(prompt):
        seen.add((need.folder, need.name))
        dirs = _model_dirs(need.folder)
        if model_files.find(need, dirs) is None:
            text = model_files.describe(need.folder, need.name, dirs)
            if need.known is None and links.get((need.folder, need.name)):
                text = f"'{need.name}' -> put it in the '{need.folder}' model folder ({dirs[0]}); download: " \
                       f"{links[(need.folder, need.name)]}"
            lines.append(f"{text} [node {need.node_id} {need.class_type}, input '{need.input_name}']")
    for m in declared:
        key = (m["directory"], m["name"])
        if key in seen:
            continue
        try:
            dirs = _model_dirs(m["directory"])
            confine(dirs[0], m["name"], node="workflow models", input_name="name")
        except PathOutsideFolderError as exc:
            lines.append(str(exc))
            continue
        if model_files.find(model_files.ModelFile(m["directory"], m["name"], m.get("url", ""), ""), dirs) is None:
            lines.append(f"'{m['name']}' -> put it in the '{m['directory']}' model folder ({dirs[0]}); download: "
                         f"{m.get('url') or '(no link in the workflow)'} [declared in the workflow's models]")
    return lines


def missing_models(prompts, declared: list[dict] | None = None) -> list[str]:
    """check_models over several prompts (a batch's representative jobs), each missing file once; the workflow's
    declared models are checked even with no prompt."""
    return list(dict.fromkeys(line for prompt in list(prompts) or [{}] for line in check_models(prompt, declared)))


class _Bars:
    """A job bar and a node bar on stderr (tqdm), or plain log lines when disabled."""

    def __init__(self, total_jobs: int, enabled: bool):
        self.enabled = enabled
        self.job_bar = self.node_bar = None
        self.total_jobs = total_jobs
        if enabled:
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm
                self.job_bar = tqdm(total=total_jobs, desc="jobs", position=0, unit="job", file=sys.stderr)
            except ImportError:
                self.enabled = False

    def node(self, nid: str, ctype: str, index: int, total: int, job: int) -> None:
        nid, ctype = one_line(nid, 40), one_line(ctype, 80)  # from the workflow: no escapes in the bars either
        text = f"job {job + 1}/{self.total_jobs} node {nid} {ctype} ({index + 1}/{total})"
        if self.enabled:
            self.close_node()
            self.job_bar.set_postfix_str(f"node {nid} {ctype}")
            self.node_bar = self._tqdm(total=1, desc=f"  {nid} {ctype}", position=1, leave=False, file=sys.stderr)
        else:
            log(text, verbose_only=True)

    def node_progress(self, value: int, total: int, preview: Any) -> None:
        if self.node_bar is not None:
            self.node_bar.total = total
            self.node_bar.n = value
            self.node_bar.refresh()

    def close_node(self) -> None:
        if self.node_bar is not None:
            self.node_bar.close()
            self.node_bar = None

    def job_done(self) -> None:
        self.close_node()
        if self.job_bar is not None:
            self.job_bar.update(1)

    def close(self) -> None:
        self.close_node()
        if self.job_bar is not None:
            self.job_bar.close()


_VERBOSE = False


MAX_LOG_LINES = 60  # lines of one message (a list of missing models, unknown node types)
MAX_LOG_LINE_CHARS = 2000


def log(text: str, *, verbose_only: bool = False) -> None:
    """One message to stderr. Every line is made safe here, whatever built it: control characters from a workflow
    or a server become '?' (no forged lines, no terminal escapes), long lines and long lists are cut."""
    if verbose_only and not _VERBOSE:
        return
    lines = str(text).split("\n")
    shown_lines = [one_line(line, MAX_LOG_LINE_CHARS) for line in lines[:MAX_LOG_LINES]]
    if len(lines) > MAX_LOG_LINES:
        shown_lines.append(f"... and {len(lines) - MAX_LOG_LINES} more lines")
    print("\n".join(shown_lines), file=sys.stderr, flush=True)


# ---- commands ----------------------------------------------------------------------------------------------------
def _specs(args, engine=None):
    if args.servers:
        from .remote import OBJECT_INFO_SECONDS, Budget, Server
        seconds = min(OBJECT_INFO_SECONDS, getattr(args, "timeout", None) or OBJECT_INFO_SECONDS)
        budget = Budget.after(seconds, f"{seconds:g} s").sooner(getattr(args, "run_budget", None))
        return Server(args.servers[0]).object_info(budget)
    return engine.specs()


def _convert(args) -> int:
    from .engine import Engine
    host.use(host.StandaloneHost(input_root=os.path.abspath(args.input_dir)))
    specs = _specs(args, None if args.servers else Engine())
    wf = load_workflow(args.workflow, specs)
    text = json.dumps(wf.prompt, indent=2, sort_keys=False) + "\n"
    if args.output:
        from ..utils.paths import write_exclusive
        write_exclusive(args.output, text.encode("utf-8"), node="convert", overwrite=args.overwrite)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _rewrite_json(path: str, data: dict) -> None:
    """Replace the JSON file `path` with `data` atomically (utils.paths.write_exclusive): an error leaves the old
    file whole. Text that UTF-8 cannot hold (a lone surrogate escape) is written as JSON escapes."""
    from ..utils.paths import write_exclusive
    try:
        text = json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:  # 1e400 reads as infinity, which JSON cannot write
        raise WorkflowError(f"{path}: holds a number too large for JSON; it was not rewritten") from None
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = (json.dumps(data, indent=1, ensure_ascii=True) + "\n").encode("ascii")
    write_exclusive(path, raw, node="models --write", overwrite=True)


def _models(args) -> int:
    from ..utils import model_files
    from .engine import Engine
    host.use(host.StandaloneHost(models_root=os.path.abspath(args.models_dir) if args.models_dir else None))
    specs = Engine().specs()
    status = EXIT_OK
    loaded = [(path, load_workflow(path, specs)) for path in args.workflows]  # all valid before any is rewritten
    for path, wf in loaded:
        needs = model_files.needed_files(wf.prompt)
        print(f"{path}: {len(needs)} model file(s)")
        for need in needs:
            dirs = _model_dirs(need.folder)
            found = model_files.find(need, dirs)
            print(one_line(f"  {'ok     ' if found else 'MISSING'} {need.folder}/{need.name}"
                           + ("" if found else f"  -> {model_files.describe(need.folder, need.name, dirs)}"),
                           MAX_LOG_LINE_CHARS))  # names and links may come from the workflow
        if args.write:
            if wf.ui is None:
                log(f"error: {path}: --write needs a UI-format workflow (API prompts have no place for it)")
                status = EXIT_INVALID
                continue
            models = model_files.frontend_models(wf.prompt)
            data = dict(wf.ui)
            if models:
                data["models"] = models
            else:
                data.pop("models", None)
            if data != wf.ui:
                _rewrite_json(path, data)
                print(f"  wrote {len(models)} entries to its `models` list")
    return status


def _run(args, extra_nodes: dict[str, type] | None) -> int:
    if args.timeout is None and (args.servers or args.engine == "ray"):
        args.timeout = SERVER_TIMEOUT_S
    if args.deadline is not None:
        from .remote import Budget
        args.run_budget = Budget.after(args.deadline, f"the run's --deadline of {args.deadline:g} s")
    out_dir = os.path.abspath(args.out)
    input_dir = os.path.abspath(args.input_dir)
    standalone = host.StandaloneHost(models_root=os.path.abspath(args.models_dir) if args.models_dir else None,
                                     output_root=out_dir, input_root=input_dir, device=args.device,
                                     quiet=_quiet(args))
    host.use(standalone)
    for text in args.sets:  # a model path typed on the command line is the user's own choice (workflows' are not)
        value = text.split("=", 1)[-1].strip()
        if os.path.isabs(value) and os.path.isfile(value):
            host.trust_file(value)
    engine = None
    if not args.servers:
        from .engine import Engine, registry
        engine = Engine(registry(extra_nodes))
    specs = _specs(args, engine)
    wf = load_workflow(args.workflow, specs)
    jobs = make_jobs(wf.prompt, specs, args.sets, args.batches)
    representatives = list(jobs.representatives())  # every listed value and both ends of each range
    model_prompts = [job for _, _, job in representatives]
    remote_cluster = args.engine == "ray" and (args.address or os.environ.get("RAY_ADDRESS"))
    # servers have their own model folders, a cluster's workers check theirs on start; a local run checks here
    if not args.servers and not remote_cluster:
        missing = missing_models(model_prompts, wf.declared_models)
        if missing:
            log(f"error: {os.path.basename(args.workflow)}: {len(missing)} model file(s) missing, nothing was run. "
                f"Get all of them:")
            for i, m in enumerate(missing, 1):
                log(f"  {i}. {m}")
            return EXIT_INVALID
    if engine is not None:
        for k, label, job in representatives:
            try:
                engine.validate(job)
            except WorkflowError as exc:
                raise WorkflowError(f"job {k + 1} ({label}): {exc}" if label else str(exc)) from None
    if args.dry_run:
        for i, (label, job) in enumerate(jobs):
            try:
                n = len(engine.validate(job)) if engine is not None else len(job)
            except WorkflowError as exc:
                raise WorkflowError(f"job {i + 1} ({label}): {exc}" if label else str(exc)) from None
            print(f"job {i + 1}/{len(jobs)}: {label or '(as saved)'}: {n} nodes")
        print(f"{os.path.basename(args.workflow)}: valid ({wf.source_format} format, {len(jobs)} job(s))")
        return EXIT_OK
    _check_out_dir(out_dir)  # after validation (a refused workflow leaves no folder), before any job
    extra_pnginfo = {"workflow": wf.ui} if wf.ui is not None else None
    if args.engine == "ray" or args.resume:
        return _run_keyed(args, engine, jobs, wf, model_prompts, out_dir, input_dir, extra_pnginfo, standalone,
                          extra_nodes)
    from .manifest import refuse_manifest
    refuse_manifest(out_dir)
    if args.servers:
        return _run_remote(args, jobs, specs, out_dir, input_dir, extra_pnginfo)
    return _run_local(args, engine, jobs, out_dir, extra_pnginfo, standalone)


def _check_out_dir(out_dir: str) -> None:
    """--out is a folder this run can write into, checked before any job runs (not when the first save fails)."""
    import tempfile
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".humangen-check-"):
            pass
    except OSError as exc:
        problem = "is a file" if os.path.exists(out_dir) and not os.path.isdir(out_dir) else \
            f"cannot be written ({exc.strerror or exc})"
        raise WorkflowError(f"--out {out_dir} {problem}; choose a folder this user can write to") from None


def _run_local(args, engine, jobs, out_dir, extra_pnginfo, standalone) -> int:
    from .engine import JobTimedOut, NodeExecutionError, job_budget, time_limit
    quiet = _quiet(args)
    bars = _Bars(len(jobs), enabled=not quiet)
    current = {"job": 0}
    engine.on_node = lambda nid, ctype, i, total: bars.node(nid, ctype, i, total, current["job"])
    standalone.progress_listener = bars.node_progress
    written: list[str] = []
    failures = ok = 0
    status = EXIT_OK
    t0 = time.perf_counter()
    run_budget = getattr(args, "run_budget", None)
    try:
        with host.interrupt_on_sigint():
            for i, (label, job) in enumerate(jobs):
                current["job"] = i
                where = f"job {i + 1}/{len(jobs)}{' (' + label + ')' if label else ''}"
                if run_budget is not None and run_budget.remaining() <= 0:
                    log(f"error: {where}: not started, the run's --deadline of {args.deadline:g} s has passed")
                    failures += len(jobs) - i
                    break
                try:
                    with time_limit(standalone, job_budget(args)):
                        result = engine.run(job, extra_pnginfo=extra_pnginfo)
                except (NodeExecutionError, WorkflowError, JobTimedOut) as exc:
                    failures += 1
                    written.extend(_files_of(getattr(exc, "outputs", {}), out_dir))  # saved before the failure
                    bars.close_node()
                    log(f"error: {where}: {exc}")
                    if not args.keep_going:
                        status = EXIT_FAILED
                        break
                    continue
                ok += 1
                files = _files_of(result.outputs, out_dir)
                written.extend(files)
                bars.job_done()
                log(f"job {i + 1}/{len(jobs)}{' ' + label if label else ''}: {len(result.executed)} ran, "
                    f"{len(result.cached)} cached, {len(files)} file(s), {result.seconds:.2f} s",
                    verbose_only=not quiet)
    except (HumanGenInterrupted, KeyboardInterrupt):
        status = EXIT_INTERRUPTED
        bars.close()
        log(f"interrupted: stopped cleanly; {len(jobs) - ok - failures} job(s) not run or not finished (files "
            "already written are kept)")
    finally:
        bars.close()
        standalone.progress_listener = None
    if failures and status == EXIT_OK:
        status = EXIT_FAILED
    _summary(written, len(jobs), ok, time.perf_counter() - t0)
    return status


def _run_keyed(args, engine, jobs, wf, model_prompts, out_dir, input_dir, extra_pnginfo, standalone,
               extra_nodes) -> int:
    """--engine ray, or --resume in-process: outputs named after job keys, manifest.jsonl, resumable."""
    if args.servers:
        raise WorkflowError("--engine ray and --resume do not combine with --server")
    if args.max_attempts < 1 or (args.workers is not None and args.workers < 1):
        raise WorkflowError("--max-attempts and --workers must be at least 1")
    t0 = time.perf_counter()
    if args.engine == "ray":
        from . import ray_engine
        status, written, failures = ray_engine.run(
            args, jobs, out_dir=out_dir, input_dir=input_dir,
            models_dir=os.path.abspath(args.models_dir) if args.models_dir else None, extra_nodes=extra_nodes,
            extra_pnginfo=extra_pnginfo,
            needs_models={"prompts": model_prompts, "declared": wf.declared_models},
            log=log)
    else:
        from .manifest import run_in_process
        status, written, failures = run_in_process(args, engine, jobs, out_dir, extra_pnginfo, standalone,
                                                   log)
    _summary(written, len(jobs), len(jobs) - failures, time.perf_counter() - t0)  # failures: jobs not done
    return status
# The "ui" keys under which output nodes report the files they wrote (as ComfyUI's /history shows them): images,
# and other files such as HumanGenSavePose's pose JSON.
FILE_KEYS = ("images", "files")


def _quiet(args) -> bool:
    return bool(getattr(args, "quiet", False)) or os.environ.get("HUMANGEN_NO_PROGRESS") == "1"


def _files_of(outputs: dict, out_dir: str) -> list[str]:
    """Every file the job's output nodes report: saved ("output", under --out) and previews ("temp")."""
    folders = {"output": out_dir, "temp": host.temp_dir()}
    files = []
    for ui in outputs.values():
        for key in FILE_KEYS:
            for item in ui.get(key, []) or []:
                if isinstance(item, dict) and item.get("type") in folders and item.get("filename"):
                    files.append(os.path.join(folders[item["type"]], item.get("subfolder") or "", item["filename"]))
    return files


def _run_remote(args, jobs, specs, out_dir, input_dir, extra_pnginfo) -> int:
    from .remote import RemoteJob, Server, run_remote
    servers = [Server(u) for u in args.servers]
    total = len(jobs)
    stop = threading.Event()
    bars = _Bars(len(jobs), enabled=not _quiet(args))

    def done(job: RemoteJob) -> None:
        bars.job_done()
        if job.error is not None and not isinstance(job.error, KeyboardInterrupt):
            log(f"error: job {job.index + 1}/{total}{' (' + job.label + ')' if job.label else ''} on "
                f"{job.server}: {job.error}")
            if not args.keep_going:
                stop.set()

    t0 = time.perf_counter()
    extra = {"extra_pnginfo": extra_pnginfo} if extra_pnginfo else None
    lazy = (RemoteJob(i, job, label) for i, (label, job) in enumerate(jobs))
    try:
        started = run_remote(servers, lazy, specs=specs, out_dir=out_dir, input_dir=input_dir,
                             timeout=args.timeout, deadline=getattr(args, "run_budget", None), extra_data=extra,
                             stop=stop, on_done=done, max_file_bytes=int(args.max_download_mb * 1024 * 1024))
    finally:
        bars.close()
    written = [f for j in started for f in j.files]
    errors = [j.error for j in started if j.error is not None]
    ok = sum(j.finished and j.error is None for j in started)
    failures = len(errors)
    skipped = total - len(started)
    run_budget = getattr(args, "run_budget", None)
    if skipped and run_budget is not None and run_budget.remaining() <= 0:
        log(f"error: {skipped} job(s) not started: the run's --deadline of {args.deadline:g} s has passed")
        failures += skipped
    _summary(written, total, ok, time.perf_counter() - t0)
    if any(isinstance(e, KeyboardInterrupt) for e in errors):
        log(f"interrupted: stopped cleanly; {total - ok - failures} job(s) not run or not finished (files already "
            "written are kept)")
        return EXIT_INTERRUPTED
    if any(isinstance(e, WorkflowError) for e in errors):
        return EXIT_INVALID
    if failures:
        return EXIT_FAILED
    if stop.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK


def _summary(written: list[str], total: int, ok: int, seconds: float) -> None:
    """The files written (stdout, one per line) and one count line: `ok` counts only jobs that finished without
    error (failed, interrupted and never-started jobs are not ok)."""
    for path in written:
        print(path)
    log(f"{ok}/{total} job(s) ok, {len(written)} file(s) written in {seconds:.1f} s")


def _stop_on_sigterm():
    """SIGTERM (timeout, docker stop, a batch scheduler) stops a run as Ctrl-C does, so its clean-up runs and no
    temporary file stays behind. Returns the handler to restore (None off the main thread, where none is set)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return None

    def stop(_signum, _frame):
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, stop)


def main(argv: Sequence[str] | None = None, *, extra_nodes: dict[str, type] | None = None) -> int:
    """Entry point; returns the exit status. `extra_nodes` adds node classes (tests, embedding scripts)."""
    global _VERBOSE
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    _VERBOSE = os.environ.get("HUMANGEN_VERBOSE") == "1"
    previous = host._active
    previous_term = _stop_on_sigterm()
    try:
        if args.command == "convert":
            return _convert(args)
        if args.command == "models":
            return _models(args)
        if args.command == "validate":
            args.dry_run = True
        return _run(args, extra_nodes)
    except WorkflowError as exc:
        log(f"error: {exc}")
        return EXIT_INVALID
    except (KeyboardInterrupt, HumanGenInterrupted):
        log("interrupted")
        return EXIT_INTERRUPTED
    except HumanGenError as exc:  # e.g. a file that would be replaced, a name outside its folder
        log(f"error: {exc}")
        return EXIT_INVALID
    except Exception as exc:  # noqa: BLE001 - e.g. a server that cannot be reached: one clear line
        from .remote import RemoteError
        if isinstance(exc, RemoteError):
            log(f"error: {exc}")
            return EXIT_FAILED
        if _VERBOSE:
            raise
        log(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (HUMANGEN_VERBOSE=1 shows where)")
        return EXIT_FAILED
    finally:
        host.use(previous) if previous is not None else host.reset()
        if previous_term is not None:
            import signal
            signal.signal(signal.SIGTERM, previous_term)


if __name__ == "__main__":
    sys.exit(main())
