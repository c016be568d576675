"""`--engine ray`: a batch of workflow runs spread over a Ray cluster, each output committed exactly once.

Ray is imported here only, when this engine runs; never when the pack or the runner is imported.

- Each worker is a Ray actor that holds one in-process runner engine for its life (models load once per worker) and
  declares its GPUs/CPUs; Ray restarts a dead worker at most `2 * --max-attempts` times and never retries a task.
- On start a worker loads the pack from the driver's pack folder path, compares every pack source file with the
  driver's and checks the workflow's model files on its node: a mismatch stops the run (exit 2) naming node and file.
- The driver keeps at most one job per live worker, collects with `ray.wait`, requeues a job lost to a dead worker,
  counts an attempt only when a worker reported that it started the job (its begin() call answered), and after
  --max-attempts writes the job to failures.jsonl and goes on. A job that raises (in a node or outside) fails at
  once (a Python error repeats). Jobs that name the same model files go to the worker that last ran such a job.
- Only the driver commits outputs (runner/manifest.py): workers send the file bytes back (works over ray:// without
  shared storage), or with --shared-out leave finished files in `<out>/.humangen/staging/` for the driver to link in.
"""
from __future__ import annotations

import collections
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from ..utils.errors import HumanGenError, first_line
from .manifest import STATE_DIR, Progress, RunFolder, keyed_jobs
from .workflow import WorkflowError

PACK_PARTS = ("__init__.py", "__main__.py", "nodes", "models", "utils", "runner")
RESTARTS_PER_ATTEMPT = 2
POLL_S = 0.5


def pack_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pack_fingerprint(root: str) -> dict[str, str]:
    """sha256 of every source file of the pack (relative path -> digest): what must match on every node."""
    prints = {}
    for part in PACK_PARTS:
        path = os.path.join(root, part)
        walk = [(os.path.dirname(path), [], [part])] if os.path.isfile(path) else os.walk(path)
        for folder, dirs, names in walk:
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for name in sorted(names):
                if name.endswith(".py"):
                    full = os.path.join(folder, name)
                    with open(full, "rb") as f:
                        prints[os.path.relpath(full, root).replace(os.sep, "/")] = hashlib.sha256(f.read()).hexdigest()
    return prints


def import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports unless the user asked for them
    try:
        import ray
    except ImportError:
        raise WorkflowError("--engine ray needs Ray: pip install 'ray[client]==2.60.*' (or python install.py --ray); "
                            "see the README, 'Run on a cluster'") from None
    return ray


def model_signature(prompt: dict) -> frozenset:
    """The model file names a job's nodes ask for: jobs with the same signature go to the same worker."""
    from ..utils.host import MODEL_FOLDERS
    exts = tuple(sorted({e for kinds in MODEL_FOLDERS.values() for e in kinds if e}))
    return frozenset((node.get("class_type"), name, value) for node in prompt.values()
                     for name, value in (node.get("inputs") or {}).items()
                     if isinstance(value, str) and value.lower().endswith(exts))


# ---- the worker (runs in a Ray worker process) -------------------------------------------------------------------
def worker_class(ray):
    """The actor class, built here so that Ray ships it by value: a worker process need not be able to import the
    pack by name before the actor has loaded it from `pack_root`. Its methods use only the standard library until
    then."""

    class HumanGenWorker:
        def __init__(self, config: dict):
            import os as _os
            self.config = config
            self.pid = _os.getpid()
            try:
                self.node = ray.util.get_node_ip_address()
            except Exception:  # noqa: BLE001 - only used in messages
                self.node = "?"
            self.problem = None
            try:
                self._setup(config)
            except Exception as exc:  # noqa: BLE001 - reported by ready(), so that the driver exits 2 naming it
                self.problem = f"{type(exc).__name__}: {exc}"

        def _setup(self, config: dict) -> None:
            import importlib
            import importlib.util
            import os as _os
            import sys
            name, root = config["pack_name"], config["pack_root"]
            if not _os.path.isfile(_os.path.join(root, "__init__.py")):
                self.problem = (f"the HumanGen pack is not at {root} on this node; install the same checkout at "
                                "the same path on every node")
                return
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, _os.path.join(root, "__init__.py"),
                                                              submodule_search_locations=[root])
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            ray_engine = importlib.import_module(f"{name}.runner.ray_engine")
            mine = ray_engine.pack_fingerprint(root)
            theirs = config["fingerprint"]
            for rel in sorted(set(mine) | set(theirs)):
                if mine.get(rel) != theirs.get(rel):
                    state = "is missing" if rel not in mine else ("is not on the driver" if rel not in theirs
                                                                  else "differs from the driver's")
                    self.problem = (f"pack file {rel} {state} ({root}); install the same HumanGen version on every "
                                    "node")
                    return
            host = importlib.import_module(f"{name}.utils.host")
            self.host = host.StandaloneHost(models_root=config["models_dir"], input_root=config["input_dir"],
                                            output_root=None, device=config["device"])
            host.use(self.host)
            needs = config["needs_models"]
            missing = importlib.import_module(f"{name}.runner.cli").missing_models(needs["prompts"], needs["declared"])
            if missing:
                self.problem = missing[0]
                return
            engine = importlib.import_module(f"{name}.runner.engine")
            self.engine = engine.Engine(engine.registry(config["extra_nodes"]))
            self.NodeExecutionError = engine.NodeExecutionError
            self.render_into = importlib.import_module(f"{name}.runner.manifest").render_into

        def ready(self) -> dict:
            import os as _os
            return {"node": self.node, "pid": self.pid, "problem": self.problem,
                    "cuda_visible_devices": _os.environ.get("CUDA_VISIBLE_DEVICES")}

        def begin(self, key: str, attempt: int) -> dict:
            """Answers as this worker takes up the job: the driver submits begin() and run() together (an actor
            runs its calls in order) and counts the attempt once begin() has answered. (Not a generator that
            streams "started" first: Ray Client, for ray:// addresses, has no streaming generators.)"""
            return {"started": True, "pid": self.pid}

        def run(self, key: str, prompt: dict, attempt: int) -> dict:
            """The job's outcome: {"error", "node"} or {"files", "seconds", "node", "folder"}."""
            import os as _os
            import shutil as _shutil
            import tempfile as _tempfile
            staging_root = self.config["staging_root"]
            if staging_root:
                folder = _os.path.join(staging_root, f"{key}-{attempt}-{self.pid}")
            else:
                folder = _tempfile.mkdtemp(prefix="humangen-job-")
            try:
                files, result = self.render_into(self.engine, self.host, prompt, folder,
                                                 extra_pnginfo=self.config["extra_pnginfo"])
            except self.NodeExecutionError as exc:
                _shutil.rmtree(folder, ignore_errors=True)
                return {"error": str(exc), "node": self.node}
            except BaseException:
                _shutil.rmtree(folder, ignore_errors=True)
                raise
            if staging_root:
                out = [{"rel": f, "staged": _os.path.join(folder, f)} for f in files]
            else:
                out = []
                for f in files:
                    with open(_os.path.join(folder, f), "rb") as handle:
                        out.append({"rel": f, "data": handle.read()})
                _shutil.rmtree(folder, ignore_errors=True)
            return {"files": out, "seconds": result.seconds, "node": self.node, "folder": folder}

    return HumanGenWorker


# ---- the driver --------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    key: str
    label: str
    prompt: dict
    index: int
    models: frozenset
    attempts: int = 0


@dataclass
class _Worker:
    actor: Any
    number: int
    state: str = "starting"  # starting, idle, busy, restarting, dead
    ref: Any = None  # ready() while starting/restarting; begin(), then run() while busy
    outcome: Any = None  # run() while busy and not yet started
    job: _Job | None = None
    started: bool = False
    since: float = field(default_factory=time.monotonic)
    retry_at: float = 0.0
    node: str = ""
    pid: int = 0
    models: frozenset = frozenset()


class _Stop(Exception):
    def __init__(self, status: int):
        self.status = status


def _placement(ray, gpus: float, cpus: float) -> tuple[int, str]:
    """How many workers the cluster can hold at once, and the numbers for the message when it is none."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fit = 0
    for n in nodes:
        res = n.get("Resources") or {}
        by_cpu = int(res.get("CPU", 0) // cpus) if cpus > 0 else 1 << 20
        by_gpu = int(res.get("GPU", 0) // gpus) if gpus > 0 else 1 << 20
        fit += min(by_cpu, by_gpu)
    best_gpu = max((n.get("Resources", {}).get("GPU", 0) for n in nodes), default=0)
    best_cpu = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0)
    numbers = (f"each worker asks {gpus:g} GPU(s) and {cpus:g} CPU(s); the cluster has {len(nodes)} node(s), the "
               f"largest offers {best_gpu:g} GPU(s) and {best_cpu:g} CPU(s)")
    return fit, numbers


def run(args, jobs: list[tuple[str, dict]], *, out_dir: str, input_dir: str, models_dir: str | None,
        extra_nodes: dict | None, extra_pnginfo: dict | None, needs_models: dict,
        log) -> tuple[int, list[str], int]:
    """Run the batch on Ray. Returns (exit status, files written, jobs not done)."""
    folder = RunFolder(out_dir, resume=args.resume)
    todo = keyed_jobs(jobs)
    if args.resume:
        folder.resume({key: label for key, label, _, _ in todo})
        for note in folder.notes:
            log(note)
    left = [_Job(k, label, p, i, model_signature(p)) for k, label, p, i in todo if not folder.is_done(k)]
    if len(left) < len(todo):
        log(f"resume: {len(todo) - len(left)} of {len(todo)} job(s) already done")
    if not left:
        return 0, [], 0
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise WorkflowError(f"--address {address} is a Ray Client address, which needs pip install "
                            "'ray[client]==2.60.*' (python install.py --ray installs it)")
    ray = import_ray()
    own_tmp = None
    status = 1
    try:
        if address:
            _connect(ray, address, log)
        else:  # a local Ray for this run only: loopback, no dashboard, a small object store, its own temp folder
            own_tmp = tempfile.mkdtemp(prefix="hgray-", dir=os.environ.get("RAY_TMPDIR") or None)
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=256 << 20,
                     _temp_dir=own_tmp, logging_level="WARNING")
        status, written, failures = _drive(ray, args, folder, left, len(todo), out_dir=out_dir, input_dir=input_dir,
                                           models_dir=models_dir, extra_nodes=extra_nodes,
                                           extra_pnginfo=extra_pnginfo, needs_models=needs_models, log=log)
        return status, written, failures
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if own_tmp is not None:
            if status == 1:  # a job or a worker failed: its logs may say why
                log(f"ray: the local Ray's logs are in {own_tmp}")
            else:
                shutil.rmtree(own_tmp, ignore_errors=True)


CLIENT_CONNECT_TRIES, CLIENT_RETRY_S = 3, 2.0


def _connect(ray, address: str, log) -> None:
    """ray.init on an existing cluster. A ray:// connection is retried (3 tries, 2 s apart): the cluster's client
    server starts a process per connection, which can fail on a busy head (each try gets a new one)."""
    for attempt in range(1, CLIENT_CONNECT_TRIES + 1):
        try:
            ray.init(address=address, logging_level="WARNING")
            return
        except ConnectionError as exc:
            if not address.startswith("ray://") or attempt == CLIENT_CONNECT_TRIES:
                raise
            log(f"ray: connecting to {address} failed ({type(exc).__name__}: "
                f"{first_line(exc)}); trying again")
            if ray.is_initialized():
                ray.shutdown()
            time.sleep(CLIENT_RETRY_S)


def _drive(ray, args, folder: RunFolder, left: list[_Job], total: int, *, out_dir, input_dir, models_dir,
           extra_nodes, extra_pnginfo, needs_models, log) -> tuple[int, list[str], int]:
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if cluster_gpus else 0.0)
    cpus = args.cpus_per_worker
    fit, numbers = _placement(ray, gpus, cpus)
    if fit < 1:
        log(f"error: the Ray cluster cannot place one worker: {numbers}")
        return 2, [], 0
    count = max(1, min(args.workers or fit, len(left)))
    if count > fit:
        log(f"ray: {count} workers asked, the cluster holds {fit} now ({numbers}); the others start when room frees")
    config = {"pack_name": __package__.rsplit(".", 1)[0], "pack_root": pack_root(),
              "fingerprint": pack_fingerprint(pack_root()), "models_dir": models_dir, "input_dir": input_dir,
              "device": args.device, "needs_models": needs_models, "extra_nodes": dict(extra_nodes or {}),
              "extra_pnginfo": extra_pnginfo,
              "staging_root": os.path.join(os.path.abspath(out_dir), STATE_DIR, "staging") if args.shared_out
              else None}
    Actor = ray.remote(worker_class(ray))
    options = dict(num_cpus=cpus, num_gpus=gpus, max_restarts=RESTARTS_PER_ATTEMPT * args.max_attempts,
                   max_task_retries=0)
    workers = [_Worker(Actor.options(**options).remote(config), n) for n in range(count)]
    for w in workers:
        w.ref = w.actor.ready.remote()
    pending = collections.deque(left)
    already = len(folder.entries)
    progress = Progress(total, total - len(left))
    written: list[str] = []
    failed = 0
    stopping = False  # a job failed without --keep-going: finish what runs, start nothing new
    status = 0
    t_no_worker = time.monotonic()

    def live() -> int:
        return sum(w.state in ("idle", "busy") for w in workers)

    def give_up(job: _Job, error: str, node: str) -> None:
        nonlocal failed
        failed += 1
        folder.fail(job.key, job.label, attempts=job.attempts, error=error, node=node)
        log(f"error: job {job.index + 1}{' (' + job.label + ')' if job.label else ''}: {error}")
        progress.update(failed=1, workers=live(), force=True)

    def lost(w: _Worker, why: str) -> None:
        """The worker died (or was killed for --timeout) while it held a job."""
        job, w.job = w.job, None
        if job is not None:
            if w.started and job.attempts >= args.max_attempts:
                give_up(job, f"worker lost {job.attempts} time(s) (--max-attempts {args.max_attempts}): {why}",
                        w.node)
            else:
                log(f"ray: worker {w.number} on {w.node or '?'} lost ({why}); job {job.index + 1} goes back to the "
                    "queue")
                pending.appendleft(job)
        w.state, w.ref, w.outcome, w.started, w.retry_at = "restarting", None, None, False, time.monotonic()

    try:
        while pending or any(w.state == "busy" for w in workers):
            now = time.monotonic()
            for w in workers:  # hand out jobs: same models first, at most one job per worker
                if w.state == "idle" and pending and not stopping:
                    job = next((j for j in pending if j.models == w.models), pending[0])
                    pending.remove(job)
                    w.job, w.started, w.since, w.models = job, False, now, job.models
                    w.ref = w.actor.begin.remote(job.key, job.attempts + 1)
                    w.outcome, w.state = w.actor.run.remote(job.key, job.prompt, job.attempts + 1), "busy"
                elif w.state == "restarting" and w.ref is None and now >= w.retry_at:
                    w.ref = w.actor.ready.remote()
            if stopping and not any(w.state == "busy" for w in workers):
                break
            if live() == 0 and not any(w.state in ("starting", "restarting") for w in workers):
                log(f"error: no Ray worker is left (each was restarted {options['max_restarts']} times); "
                    f"{len(pending)} job(s) did not run")
                status = 1
                break
            if live():
                t_no_worker = now
            elif now - t_no_worker > args.timeout:
                log(f"error: no Ray worker came up within {args.timeout:.0f} s (--timeout); {numbers}")
                status = 1
                break
            refs = [w.ref for w in workers if w.ref is not None]
            ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S) if refs else ([], [])
            for w in workers:
                if w.ref is None or w.ref not in ready:
                    continue
                if w.state in ("starting", "restarting"):
                    try:
                        info = ray.get(w.ref)
                    except ray.exceptions.ActorDiedError as exc:
                        w.state, w.ref = "dead", None
                        log(f"ray: worker {w.number} is gone for good: {first_line(exc, 300)}")
                        continue
                    except ray.exceptions.RayActorError:  # still restarting: ask again shortly
                        w.ref, w.retry_at = None, time.monotonic() + POLL_S
                        continue
                    w.node, w.pid = info["node"], info["pid"]
                    if info["problem"]:
                        log(f"error: Ray worker on node {w.node}: {info['problem']}")
                        raise _Stop(2)
                    w.state, w.ref, w.models = "idle", None, frozenset()
                    continue
                try:  # busy: begin() or run() answered
                    item = ray.get(w.ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    lost(w, type(exc).__name__)
                    continue
                except ray.exceptions.RayTaskError as exc:  # raised outside the job's nodes: it would repeat
                    cause = getattr(exc, "cause", None) or exc
                    item = {"error": f"the job failed on the worker: {type(cause).__name__}: "
                                     f"{first_line(cause, 300)}", "node": w.node}
                    w.outcome = None
                if not w.started:  # begin() answered (or the job failed at once): the attempt counts
                    w.started = True
                    w.job.attempts += 1
                    if "error" not in item:  # now wait for run()
                        w.pid = item.get("pid", w.pid)
                        w.ref, w.outcome = w.outcome, None
                        continue
                job, w.job, w.state, w.ref = w.job, None, "idle", None
                if "error" in item:
                    give_up(job, item["error"], item.get("node", w.node))
                    if not args.keep_going:
                        stopping, status = True, 1
                    continue
                try:
                    written += folder.commit(job.key, job.label, item["files"], seconds=item["seconds"],
                                             node=item["node"], attempt=job.attempts)
                except HumanGenError as exc:  # a name outside --out, a different file under the job's name
                    give_up(job, str(exc), item["node"])
                    if not args.keep_going:
                        stopping, status = True, 1
                    continue
                if item.get("folder") and args.shared_out:
                    shutil.rmtree(item["folder"], ignore_errors=True)
                progress.update(done=1, workers=live())
            now = time.monotonic()
            for w in workers:  # --timeout per job: kill the worker (Ray restarts it); the attempt counts
                if w.state == "busy" and now - w.since > args.timeout:
                    ray.kill(w.actor, no_restart=False)
                    lost(w, f"the job did not finish within {args.timeout:.0f} s (--timeout)")
    except _Stop as stop:
        status = stop.status
    except KeyboardInterrupt:
        log("interrupted: stopped cleanly (committed jobs are kept; run again with --resume)")
        status = 130
    finally:
        for w in workers:  # ours: end them now rather than when the driver disconnects
            try:
                ray.kill(w.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if config["staging_root"]:  # what killed workers left half-rendered
            shutil.rmtree(config["staging_root"], ignore_errors=True)
    progress.update(workers=live(), force=True)
    folder.tidy()
    if status == 0 and failed:
        status = 1
    not_done = len(left) - (len(folder.entries) - already)
    return status, written, not_done
