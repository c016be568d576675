"""Command line of the headless runner: `python <pack-dir> run WORKFLOW.json [options]`
(also `python -m humangen run ...` and the `humangen` console script when installed).

Exit status: 0 all jobs succeeded (or --dry-run found the workflow valid), 1 a job failed while running,
2 bad arguments / invalid workflow / missing model files (nothing ran), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
from typing import Any, Sequence

from ..utils import host
from ..utils.errors import HumanGenInterrupted
from .workflow import WorkflowError, coerce, expand_sweep, load_workflow, parse_assignment, targets

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    conv.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")
    conv.add_argument("--server", dest="servers", action="append", default=[], metavar="URL",
                      help="use this server's node definitions (/object_info)")
    conv.add_argument("--input-dir", default="input")
    return parser


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
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one job on a server")
    run.add_argument("--device", default=None, help="torch device in-process (default: cuda if available)")
    run.add_argument("--dry-run", action="store_true", help="validate every job and list them; run nothing")
    run.add_argument("--keep-going", action="store_true", help="continue with the next job after a failure")
    run.add_argument("--quiet", action="store_true",
                     help="no progress bars: one line per job instead (also HUMANGEN_NO_PROGRESS=1)")


# ---- jobs --------------------------------------------------------------------------------------------------------
def make_jobs(prompt: dict, specs: dict, sets: Sequence[str], batches: Sequence[str]) -> list[tuple[str, dict]]:
    """Apply --set overrides, then expand --batch sweeps (cartesian product) into (label, prompt) jobs."""
    base = json.loads(json.dumps(prompt))
    for text in sets:
        node_id, name, value = parse_assignment(text, "--set")
        for nid, kind in targets(base, specs, node_id, name, f"--set {text}"):
            base[nid]["inputs"][name] = coerce(value, kind, where=f"--set {text}: ")
    axes = []
    for text in batches:
        node_id, name, value = parse_assignment(text, "--batch")
        hits = targets(base, specs, node_id, name, f"--batch {text}")
        values = expand_sweep(value, hits[0][1], where=f"--batch {text}: ")
        label = f"{node_id}.{name}" if node_id else name
        axes.append([(label, hits, name, v) for v in values])
    jobs = []
    for combo in itertools.product(*axes) if axes else [()]:
        job = json.loads(json.dumps(base))
        for _, hits, name, v in combo:
            for nid, _ in hits:
                job[nid]["inputs"][name] = v
        label = " ".join(f"{lab}={v}" for lab, _, _, v in combo)
        jobs.append((label, job))
    return jobs


def check_models(needs: list[dict]) -> list[str]:
    """Messages for each `needs_models` entry whose file is missing in its model folder."""
    missing = []
    for need in needs:
        folder, name = need.get("folder"), need.get("file")
        if not folder or not name:
            continue
        try:
            dirs = host.model_dirs(folder)
        except KeyError:
            dirs = [os.path.join(os.environ.get("HUMANGEN_MODELS_DIR") or "models", folder)]
        if any(os.path.exists(os.path.join(d, name)) for d in dirs):
            continue
        msg = f"missing model file {name!r}: put it in {dirs[0]}"
        if need.get("url"):
            msg += f" (download: {need['url']}"
            msg += f"; licence: {need['license']})" if need.get("license") else ")"
        missing.append(msg)
    return missing


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


def log(text: str, *, verbose_only: bool = False) -> None:
    if verbose_only and not _VERBOSE:
        return
    print(text, file=sys.stderr, flush=True)


# ---- commands ----------------------------------------------------------------------------------------------------
def _specs(args, engine=None):
    if args.servers:
        from .remote import Server
        return Server(args.servers[0]).object_info()
    return engine.specs()


def _convert(args) -> int:
    from .engine import Engine
    host.use(host.StandaloneHost(input_root=os.path.abspath(args.input_dir)))
    specs = _specs(args, None if args.servers else Engine())
    wf = load_workflow(args.workflow, specs)
    text = json.dumps(wf.prompt, indent=2, sort_keys=False) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _run(args, extra_nodes: dict[str, type] | None) -> int:
    out_dir = os.path.abspath(args.out)
    input_dir = os.path.abspath(args.input_dir)
    standalone = host.StandaloneHost(models_root=os.path.abspath(args.models_dir) if args.models_dir else None,
                                     output_root=out_dir, input_root=input_dir, device=args.device,
                                     quiet=_quiet(args))
    host.use(standalone)
    engine = None
    if not args.servers:
        from .engine import Engine, registry
        engine = Engine(registry(extra_nodes))
    specs = _specs(args, engine)
    wf = load_workflow(args.workflow, specs)
    jobs = make_jobs(wf.prompt, specs, args.sets, args.batches)
    if wf.needs_models and not args.servers:
        missing = check_models(wf.needs_models)
        if missing:
            for m in missing:
                log(f"error: {os.path.basename(args.workflow)}: {m}")
            return EXIT_INVALID
    orders = []
    if engine is not None:
        for i, (label, job) in enumerate(jobs):
            try:
                orders.append(engine.validate(job))
            except WorkflowError as exc:
                raise WorkflowError(f"job {i + 1} ({label}): {exc}" if label else str(exc)) from None
    if args.dry_run:
        for i, (label, job) in enumerate(jobs):
            n = len(orders[i]) if orders else len(job)
            print(f"job {i + 1}/{len(jobs)}: {label or '(as saved)'}: {n} nodes")
        print(f"{os.path.basename(args.workflow)}: valid ({wf.source_format} format, {len(jobs)} job(s))")
        return EXIT_OK
    extra_pnginfo = {"workflow": wf.ui} if wf.ui is not None else None
    if args.servers:
        return _run_remote(args, jobs, specs, out_dir, input_dir, extra_pnginfo)
    return _run_local(args, engine, jobs, orders, out_dir, extra_pnginfo, standalone)


def _run_local(args, engine, jobs, orders, out_dir, extra_pnginfo, standalone) -> int:
    from .engine import NodeExecutionError
    quiet = _quiet(args)
    bars = _Bars(len(jobs), enabled=not quiet)
    current = {"job": 0}
    engine.on_node = lambda nid, ctype, i, total: bars.node(nid, ctype, i, total, current["job"])
    standalone.progress_listener = bars.node_progress
    written: list[str] = []
    failures = 0
    status = EXIT_OK
    t0 = time.perf_counter()
    try:
        with host.interrupt_on_sigint():
            for i, (label, job) in enumerate(jobs):
                current["job"] = i
                try:
                    result = engine.run(job, extra_pnginfo=extra_pnginfo, order=orders[i])
                except NodeExecutionError as exc:
                    failures += 1
                    bars.close_node()
                    log(f"error: job {i + 1}/{len(jobs)}{' (' + label + ')' if label else ''}: {exc}")
                    if not args.keep_going:
                        status = EXIT_FAILED
                        break
                    continue
                files = _files_of(result.outputs, out_dir)
                written.extend(files)
                bars.job_done()
                log(f"job {i + 1}/{len(jobs)}{' ' + label if label else ''}: {len(result.executed)} ran, "
                    f"{len(result.cached)} cached, {len(files)} file(s), {result.seconds:.2f} s",
                    verbose_only=not quiet)
    except (HumanGenInterrupted, KeyboardInterrupt):
        status = EXIT_INTERRUPTED
        bars.close()
        log("interrupted: stopped cleanly (files already written are kept)")
    finally:
        bars.close()
        standalone.progress_listener = None
    if failures and status == EXIT_OK:
        status = EXIT_FAILED
    _summary(written, len(jobs), failures, time.perf_counter() - t0)
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
    remote_jobs = [RemoteJob(i, job, label) for i, (label, job) in enumerate(jobs)]
    stop = threading.Event()
    bars = _Bars(len(jobs), enabled=not _quiet(args))

    def done(job: RemoteJob) -> None:
        bars.job_done()
        if job.error is not None and not isinstance(job.error, KeyboardInterrupt):
            log(f"error: job {job.index + 1}/{len(jobs)}{' (' + job.label + ')' if job.label else ''} on "
                f"{job.server}: {job.error}")
            if not args.keep_going:
                stop.set()

    t0 = time.perf_counter()
    extra = {"extra_pnginfo": extra_pnginfo} if extra_pnginfo else None
    try:
        run_remote(servers, remote_jobs, specs=specs, out_dir=out_dir, input_dir=input_dir, timeout=args.timeout,
                   extra_data=extra, stop=stop, on_done=done)
    finally:
        bars.close()
    written = [f for j in remote_jobs for f in j.files]
    errors = [j.error for j in remote_jobs if j.error is not None]
    failures = len(errors)
    _summary(written, len(jobs), failures, time.perf_counter() - t0)
    if any(isinstance(e, KeyboardInterrupt) for e in errors):
        log("interrupted: stopped cleanly (files already written are kept)")
        return EXIT_INTERRUPTED
    if any(isinstance(e, WorkflowError) for e in errors):
        return EXIT_INVALID
    if failures:
        return EXIT_FAILED
    if stop.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK


def _summary(written: list[str], total: int, failures: int, seconds: float) -> None:
    for path in written:
        print(path)
    log(f"{total - failures}/{total} job(s) ok, {len(written)} file(s) written in {seconds:.1f} s")


def main(argv: Sequence[str] | None = None, *, extra_nodes: dict[str, type] | None = None) -> int:
    """Entry point; returns the exit status. `extra_nodes` adds node classes (tests, embedding scripts)."""
    global _VERBOSE
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    _VERBOSE = os.environ.get("HUMANGEN_VERBOSE") == "1"
    previous = host._active
    try:
        if args.command == "convert":
            return _convert(args)
        if args.command == "validate":
            args.dry_run = True
        return _run(args, extra_nodes)
    except WorkflowError as exc:
        log(f"error: {exc}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        log("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - e.g. a server that cannot be reached: one clear line
        from .remote import RemoteError
        if isinstance(exc, RemoteError):
            log(f"error: {exc}")
            return EXIT_FAILED
        raise
    finally:
        host.use(previous) if previous is not None else host.reset()


if __name__ == "__main__":
    sys.exit(main())
