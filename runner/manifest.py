"""Keyed, resumable batch runs, shared by the in-process engine (`--resume`) and the Ray engine (`--engine ray`).

- A job's key is a stable hash of its final API prompt (after --set/--batch), not its position in the batch, so a
  rerun, a resume or a retry on another worker finds the same job under the same key.
- Outputs are committed only by the driver, through `utils.paths.write_exclusive` (temp file, fsync, no-overwrite
  link), under names derived from the key (`<name>-<key>.png`): a retried job can never leave a second file.
- After a job's files are committed, one fsync'd line goes to `manifest.jsonl` (key, label, files, sha256, seconds,
  node, attempt); a job that failed for good goes to `failures.jsonl`.
- Before the files of a job are linked in, a pending record (`.humangen/pending/<key>.json`) lists them, so a run
  killed between the files and the manifest line is completed on `--resume` without rendering again.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Iterable

from ..utils import limits
from ..utils.paths import FileExistsRefusedError, confine, write_exclusive
from .workflow import WorkflowError

MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"
STATE_DIR = ".humangen"  # inside --out: pending records and staging folders of this kind of run
KEY_LENGTH = 16  # hex digits (64 bits): no collision in any realistic batch


class RunFolderError(WorkflowError):
    """An output folder that cannot take this run (a manifest without --resume, a corrupt manifest line)."""


def job_key(prompt: dict[str, dict]) -> str:
    """Stable hash of an API prompt: node ids, classes and inputs; `_meta` (titles) does not change the output."""
    canon = {str(nid): {"class_type": node.get("class_type"), "inputs": node.get("inputs") or {}}
             for nid, node in prompt.items()}
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    # surrogatepass: a lone surrogate escape in a workflow string (valid JSON) hashes too; other text is unchanged
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:KEY_LENGTH]


def final_name(relative: str, key: str) -> str:
    """`sub/ray_00001_.png` -> `sub/ray_00001-<key>.png`: the name a job's output gets in --out."""
    folder, name = os.path.split(relative)
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f"{stem.rstrip('_') or 'output'}-{key}{ext}")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_files(outputs: dict, root: str) -> list[str]:
    """Paths (relative to `root`) of the files an executed job saved (type "output": images and other files)."""
    files = []
    for ui in outputs.values():
        for item in (ui.get("images") or []) + (ui.get("files") or []):
            if isinstance(item, dict) and item.get("type", "output") == "output" and item.get("filename"):
                files.append(os.path.join(item.get("subfolder") or "", item["filename"]))
    return [f for f in files if os.path.isfile(os.path.join(root, f))]


def render_into(engine, standalone, prompt: dict, folder: str, *, extra_pnginfo: dict | None = None,
                order: list[str] | None = None) -> tuple[list[str], Any]:
    """Run one job with the engine, its outputs saved into the fresh `folder` (so their names do not depend on what
    --out already holds); returns (files relative to `folder`, JobResult)."""
    shutil.rmtree(folder, ignore_errors=True)  # a staging folder left by a killed run of the same job
    os.makedirs(folder)
    for nid in [n for n in engine._cache if n in prompt and engine.spec(prompt[n]["class_type"]).output_node]:
        del engine._cache[nid]  # an output node reused from the previous job would save nothing in this folder
    before = standalone.output_root
    standalone.output_root = folder
    try:
        result = engine.run(prompt, extra_pnginfo=extra_pnginfo, order=order)
    finally:
        standalone.output_root = before
    return output_files(result.outputs, folder), result


class RunFolder:
    """The --out folder of a keyed run: commits outputs, keeps manifest.jsonl and failures.jsonl."""

    def __init__(self, out_dir: str, *, resume: bool):
        self.out = os.path.abspath(out_dir)
        self.manifest_path = os.path.join(self.out, MANIFEST)
        self.failures_path = os.path.join(self.out, FAILURES)
        self.entries: dict[str, dict] = {}
        self.notes: list[str] = []  # what resuming found (cut line, recovered jobs), for the log
        if os.path.exists(self.manifest_path) and not resume:
            raise RunFolderError(f"{self.out} already holds a batch run ({MANIFEST}); add --resume to continue it "
                                 "(finished jobs are skipped), or choose another --out")
        os.makedirs(self.out, exist_ok=True)
        if resume and os.path.exists(self.manifest_path):
            self._load()

    # ---- state ---------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        with open(self.manifest_path, "rb") as f:
            data = f.read()
        *lines, tail = data.split(b"\n")
        if tail and self._entry(tail) is not None:  # a whole entry without its newline (an editor strips it)
            with open(self.manifest_path, "ab") as f:
                f.write(b"\n")
                os.fsync(f.fileno())
            lines.append(tail)
        elif tail:  # the last line was cut by a crash: drop it, so the next line starts on a fresh line
            with open(self.manifest_path, "rb+") as f:
                f.truncate(len(data) - len(tail))
                os.fsync(f.fileno())
            self.notes.append(f"{MANIFEST}: ignored a cut last line ({len(tail)} bytes)")
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            entry = self._entry(raw)
            if entry is None:
                raise RunFolderError(f"{self.manifest_path}: line {number} is not a manifest entry (an object with a "
                                     "text key and a list of file names); fix or remove that line, then run again "
                                     "with --resume")
            self.entries[entry["key"]] = entry

    @staticmethod
    def _entry(raw: bytes) -> dict | None:
        """A manifest or pending line as a dict with a text "key" and a list of text "files" (and "sha256"), else
        None."""
        try:
            entry = limits.parse_json(raw, "a manifest line")
        except ValueError:
            return None
        ok = isinstance(entry, dict) and isinstance(entry.get("key"), str) and all(
            isinstance(entry.get(k, []), list) and all(isinstance(v, str) for v in entry.get(k, []))
            for k in ("files", "sha256"))
        return entry if ok else None

    def _own_file(self, name: str) -> str | None:
        """The path of a file name from a manifest or pending record when it names a file inside --out (no
        absolute path, no '..', no link out), else None: such records come from the folder, not from this run."""
        try:
            target = confine(self.out, name, node="runner", input_name="manifest file")
        except (WorkflowError, ValueError, OSError):
            return None
        return str(target)

    def is_done(self, key: str) -> bool:
        entry = self.entries.get(key)
        if entry is None:
            return False
        paths = [self._own_file(f) for f in entry.get("files", [])]
        return all(p is not None and os.path.isfile(p) for p in paths)

    def _state(self, *parts: str) -> str:
        return os.path.join(self.out, STATE_DIR, *parts)

    def staging(self, key: str, attempt: int | str = 0) -> str:
        return self._state("staging", f"{key}-{attempt}")

    def resume(self, jobs: dict[str, str]) -> None:
        """Before a resumed run (`jobs`: key -> label): record jobs whose files were committed but not listed,
        remove files of a commit that was cut halfway, stale temporary files and staging folders."""
        pending_dir = self._state("pending")
        for name in sorted(os.listdir(pending_dir)) if os.path.isdir(pending_dir) else []:
            if name.startswith(".") and name.endswith(".part"):  # a record cut while it was written: never used
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(pending_dir, name))
                continue
            key = name[: -len(".json")]
            if not name.endswith(".json") or key not in jobs:
                continue
            path = os.path.join(pending_dir, name)
            try:
                with open(path, "rb") as fh:
                    record = self._entry(fh.read(limits.MAX_JSON_FILE_BYTES))
            except OSError:
                record = None
            files, shas = (record["files"], record.get("sha256", [])) if record else ([], [])
            # a file counts as this job's only inside --out, under this job's key, with the bytes it staged: a
            # record never makes the run delete or claim anything else
            ours = [p for f, s in zip(files, shas) for p in [self._own_file(f)]
                    if p is not None and f"-{key}" in os.path.basename(p) and os.path.isfile(p) and sha256_of(p) == s]
            if key not in self.entries and files and len(ours) == len(files) == len(shas):
                self._record(dict(record, node=record.get("node", ""), recovered=True))
                self.notes.append(f"job {key} ({jobs[key] or 'as saved'}): its files were written before the "
                                  "run stopped; recorded without rendering again")
            elif key not in self.entries:
                for p in ours:  # from a commit cut halfway: the job renders again
                    os.unlink(p)
            os.unlink(path)
        for folder, _, names in os.walk(self.out):
            if os.path.relpath(folder, self.out).split(os.sep)[0] == STATE_DIR:
                continue
            for name in names:  # exclusive_writer's temporary files: .<final name>.<random>.part
                if name.startswith(".") and name.endswith(".part") and any(k in name for k in jobs):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
        shutil.rmtree(self._state("staging"), ignore_errors=True)

    def tidy(self) -> None:
        """Remove the state folders when they are empty (nothing pending, nothing staged)."""
        for parts in (("pending",), ("staging",), ()):
            with contextlib.suppress(OSError):
                os.rmdir(self._state(*parts))

    # ---- commits -------------------------------------------------------------------------------------------------
    def commit(self, key: str, label: str, files: list[dict], *, seconds: float, node: str, attempt: int) -> list[str]:
        """Commit one job's files (each {"rel": name relative to its render folder, and "data": bytes or "staged":
        path of a finished file on this file system}), then its manifest line. Returns the final paths."""
        planned = []
        for f in files:
            rel = final_name(f["rel"], key)
            target = confine(self.out, rel, node="runner", input_name="output file")
            sha = hashlib.sha256(f["data"]).hexdigest() if "data" in f else sha256_of(f["staged"])
            planned.append((os.path.relpath(target, self.out), target, f, sha))
        entry = {"key": key, "label": label, "files": [p[0] for p in planned], "sha256": [p[3] for p in planned],
                 "seconds": round(float(seconds), 3), "node": node, "attempt": attempt}
        pending = self._state("pending", f"{key}.json")
        write_exclusive(pending, json.dumps(entry).encode("utf-8"), node="runner", overwrite=True)
        written = []
        try:
            for _, target, f, sha in planned:
                if self._commit_file(target, f, sha):
                    written.append(target)
        except BaseException:  # refused (a file of that name exists) or interrupted: take back what this wrote
            for target in written:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pending)
            raise
        self._record(entry)
        with contextlib.suppress(FileNotFoundError):  # a concurrent commit of the same job removed it first
            os.unlink(pending)
        return [p[1] for p in planned]

    @staticmethod
    def _commit_file(target: str, f: dict, sha: str) -> bool:
        """Link one file in; True when this call wrote it (False: the same bytes were already there)."""
        if "data" in f:
            source: bytes | Callable[[str], None] = f["data"]
        else:
            def source(tmp: str, staged: str = f["staged"]) -> None:
                try:
                    os.replace(staged, tmp)  # a link-in, no copy, when the staging folder is on this file system
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    shutil.copyfile(staged, tmp)
        try:
            write_exclusive(target, source, node="runner")
        except FileExistsRefusedError:
            # the same job committed meanwhile (a concurrent driver, an earlier attempt): fine if the bytes agree
            if sha256_of(target) != sha:
                raise
            return False
        return True

    def _record(self, entry: dict) -> None:
        self._append(self.manifest_path, entry)
        self.entries[entry["key"]] = entry

    def fail(self, key: str, label: str, *, attempts: int, error: str, node: str = "") -> None:
        self._append(self.failures_path, {"key": key, "label": label, "attempts": attempts, "error": error,
                                          "node": node, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    @staticmethod
    def _append(path: str, entry: dict) -> None:
        """One line, one write, fsync'd: a crash leaves at most a cut last line, never a mixed one."""
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def refuse_manifest(out_dir: str) -> None:
    """The counter-named modes (in-process without --resume, --server) never write into a keyed run's folder."""
    if os.path.exists(os.path.join(os.path.abspath(out_dir), MANIFEST)):
        RunFolder(out_dir, resume=False)


class Progress:
    """Progress of a keyed run on stderr: done/total, rate, ETA, failures, live workers (at most once a second)."""

    def __init__(self, total: int, already: int, *, stream=None, every: float = 1.0):
        self.total, self.done, self.failed = total, already, 0
        self.start_done = already
        self.t0 = time.monotonic()
        self.last, self.last_counts = 0.0, (-1, -1)
        self.every = every
        self.stream = stream or sys.stderr

    def update(self, *, done: int = 0, failed: int = 0, workers: int | None = None, force: bool = False) -> None:
        self.done += done
        self.failed += failed
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        elapsed = max(now - self.t0, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        left = self.total - self.done - self.failed
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        text = f"{self.done}/{self.total} done, {rate:.2f} job/s, ETA {eta}, {self.failed} failed"
        if workers is not None:
            text += f", {workers} worker(s) live"
        if force and (self.done, self.failed) == self.last_counts:
            return  # nothing new since the last line
        self.last, self.last_counts = now, (self.done, self.failed)
        print(text, file=self.stream, flush=True)


def keyed_jobs(jobs: Iterable[tuple[str, dict]]) -> list[tuple[str, str, dict, int]]:
    """(key, label, prompt, index) per distinct job: a batch that repeats a prompt renders it once."""
    seen: set[str] = set()
    out = []
    for i, (label, prompt) in enumerate(jobs):
        key = job_key(prompt)
        if key not in seen:
            seen.add(key)
            out.append((key, label, prompt, i))
    return out


def run_in_process(args, engine, jobs, out_dir: str, extra_pnginfo, standalone,
                   log) -> tuple[int, list[str], int]:
    """`--resume` with the in-process engine: the same manifest, names and resume rules as the Ray engine.
    Returns (exit status, files written, jobs not done)."""
    from ..utils import host
    from ..utils.errors import HumanGenError, HumanGenInterrupted
    from .engine import JobTimedOut, NodeExecutionError, job_budget, time_limit

    folder = RunFolder(out_dir, resume=True)
    todo = keyed_jobs(jobs)
    folder.resume({key: label for key, label, _, _ in todo})
    for note in folder.notes:
        log(note)
    left = [j for j in todo if not folder.is_done(j[0])]
    if len(left) < len(todo):
        log(f"resume: {len(todo) - len(left)} of {len(todo)} job(s) already done")
    progress = Progress(len(todo), len(todo) - len(left))
    written: list[str] = []
    failures = 0
    status = 0
    try:
        with host.interrupt_on_sigint():
            for key, label, prompt, index in left:
                staging = folder.staging(key)
                try:
                    with time_limit(standalone, job_budget(args)):
                        files, result = render_into(engine, standalone, prompt, staging,
                                                    extra_pnginfo=extra_pnginfo)
                    written += folder.commit(key, label, [{"rel": f, "staged": os.path.join(staging, f)}
                                                          for f in files],
                                             seconds=result.seconds, node="local", attempt=1)
                except HumanGenInterrupted:
                    raise
                except (NodeExecutionError, JobTimedOut, HumanGenError) as exc:  # HumanGenError: commit refused
                    failures += 1
                    folder.fail(key, label, attempts=1, error=str(exc), node="local")
                    log(f"error: job {index + 1}/{len(jobs)}{' (' + label + ')' if label else ''}: {exc}")
                    progress.update(failed=1, force=True)
                    if not args.keep_going:
                        status = 1
                        break
                    continue
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                progress.update(done=1)
    except (HumanGenInterrupted, KeyboardInterrupt):
        log("interrupted: stopped cleanly (committed jobs are kept; run again with --resume)")
        status = 130
    progress.update(force=True)
    folder.tidy()
    not_done = sum(not folder.is_done(key) for key, _, _, _ in left)
    return (1 if failures and status == 0 else status), written, not_done
