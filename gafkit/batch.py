"""``gafkit batch``: ``gafkit run`` on every video of a folder, each in its own process.

Each video gets ``OUT_DIR/<name>/`` (a run folder, see :mod:`gafkit.pipeline`) and its log in
``OUT_DIR/logs/<name>.log``. The run config is built and checked once, written to
``OUT_DIR/run_config.yaml``, and every job runs ``python -m gafkit run VIDEO -o OUT_DIR/<name> --config
OUT_DIR/run_config.yaml``, so a crash, a CUDA error or an out-of-memory kill of one video never
touches the others. Up to ``jobs`` run at once; with ``gpus`` each job slot owns one GPU through
``CUDA_VISIBLE_DEVICES`` (slot ``i`` gets ``gpus[i % len(gpus)]``).

A video whose ``run.json`` says complete, for the same video content and config, is skipped without
starting a process; any other is (re)started and resumes inside its folder, so rerunning the same
command after a crash or Ctrl-C finishes the batch. At the end ``summary.json`` and ``summary.csv``
list every video: status, the one-line error, attempts, seconds per stage and the eval metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Literal, Optional

from gafkit.artifact import atomic_write_bytes
from gafkit.config import save_config
from gafkit.console import interactive, log, stderr
from gafkit.errors import GafkitError, InputError
from gafkit.pipeline import METRIC_KEYS, STAGES, RunConfig, read_run, run_is_current

NO_RETRY = (0, 2, 130)
"""Exit codes not worth another attempt: success, a user error (the same input fails the same way),
an interruption."""


class BatchFailedError(GafkitError):
    """Some videos of a batch failed (the others are done): exit 1, details in the summary."""

    exit_code = 1


@dataclasses.dataclass
class BatchConfig:
    """How ``gafkit batch`` spreads the runs (the runs' own settings are a :class:`RunConfig`)."""

    pattern: str = "*.mp4"
    """Glob of the videos inside INPUT_DIR (``**/*.mp4`` descends into subfolders)."""
    jobs: Optional[int] = None
    """Runs at the same time; None = one per GPU in ``gpus``, or 1."""
    gpus: tuple[int, ...] = ()
    """GPU indices handed to the job slots (empty: the runs see every device the batch sees)."""
    executor: Literal["local", "ray"] = "local"
    ray_address: Optional[str] = None
    """Ray cluster to join (``auto``, ``HOST:6379`` or ``ray://HOST:10001``); None starts a local Ray."""
    retries: int = 0
    """Extra attempts for a run that crashed (not for user errors or interruptions)."""

    def slots(self) -> int:
        return self.jobs or max(1, len(self.gpus))


@dataclasses.dataclass
class Job:
    """One video of the batch."""

    name: str
    video: Path
    out: Path
    log: Path


@dataclasses.dataclass
class Outcome:
    """How a job ended: ``status`` is ``complete``, ``skipped`` (complete before this batch) or ``failed``."""

    status: str
    exit_code: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None


# ---- planning -------------------------------------------------------------------------------------

def find_videos(input_dir: Path, pattern: str) -> list[Path]:
    if not input_dir.is_dir():
        raise InputError(input_dir, "not a folder")
    videos = sorted(p for p in input_dir.glob(pattern) if p.is_file())
    if not videos:
        raise InputError(input_dir, f"no files match {pattern!r}")
    return videos


def plan_jobs(videos: list[Path], out_dir: Path) -> list[Job]:
    """One job per video, named by its file stem (by its path inside INPUT_DIR when stems collide)."""
    stems = [v.stem for v in videos]
    common = Path(os.path.commonpath([v.parent for v in videos]))
    jobs = []
    for video, stem in zip(videos, stems):
        name = stem if stems.count(stem) == 1 else str(video.relative_to(common)).replace(os.sep, "_").replace(".", "_")
        jobs.append(Job(name=name, video=video, out=out_dir / name, log=out_dir / "logs" / f"{name}.log"))
    return jobs


def run_command(job: Job, config_file: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "gafkit", "--device", device, "run", str(job.video), "-o", str(job.out),
            "--config", str(config_file)]


# ---- live status ----------------------------------------------------------------------------------

class Board:
    """Per-job state shared by the worker threads and the display: a rich table on a terminal, one
    log line per change otherwise."""

    def __init__(self, jobs: list[Job]):
        self.jobs = {j.name: j for j in jobs}
        self.rows = {j.name: {"status": "queued", "attempt": 0, "started": None, "error": None, "gpu": None}
                     for j in jobs}
        self.lock = threading.Lock()

    def update(self, name: str, **fields) -> None:
        with self.lock:
            self.rows[name].update(fields)
        status = fields.get("status")
        if status and not interactive():
            row = self.rows[name]
            detail = {"running": f"attempt {row['attempt']}" + (f", GPU {row['gpu']}" if row["gpu"] is not None else ""),
                      "failed": row["error"], "complete": f"{fields.get('seconds', 0):.1f} s"}.get(status, "")
            log.info("batch: %s: %s%s", name, status, f" ({detail})" if detail else "")

    def table(self):
        from rich.table import Table

        table = Table(title="gafkit batch", expand=False)
        for col in ("video", "status", "stage", "attempt", "time", "error"):
            table.add_column(col)
        colors = {"complete": "green", "skipped": "green", "failed": "red", "running": "yellow"}
        with self.lock:
            rows = {k: dict(v) for k, v in self.rows.items()}
        for name, row in rows.items():
            stage = ""
            if row["status"] == "running":
                record = read_run(self.jobs[name].out) or {}
                stage = record.get("stage") or ""
            elapsed = f"{time.time() - row['started']:.0f} s" if row["started"] and row["status"] == "running" else \
                f"{row.get('seconds', 0):.0f} s" if row.get("seconds") else ""
            status = row["status"]
            table.add_row(name, f"[{colors.get(status, 'white')}]{status}[/]", stage, str(row["attempt"] or ""),
                          elapsed, (row["error"] or "")[:80])
        return table


# ---- running --------------------------------------------------------------------------------------

def error_of(job: Job, exit_code: int) -> str:
    """The one-line reason a run failed: its run.json error, else the ``error:`` line of its log."""
    record = read_run(job.out) or {}
    if record.get("status") in ("failed", "interrupted") and record.get("error"):
        return record["error"]
    lines = job.log.read_text(encoding="utf-8", errors="replace").splitlines() if job.log.is_file() else []
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    tail = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return f"exit code {exit_code}" + (f": {tail}" if tail else "")


def attempt_job(job: Job, run_once: Callable[[Job, int], int], retries: int, board: Board) -> Outcome:
    """Run ``job`` through ``run_once(job, attempt) -> exit code`` until it succeeds, fails with a code
    in :data:`NO_RETRY`, or ``retries`` extra attempts are used up."""
    start = time.perf_counter()
    code = None
    attempt = 0
    for attempt in range(1, retries + 2):
        board.update(job.name, status="running", attempt=attempt, started=time.time())
        code = run_once(job, attempt)
        if code in NO_RETRY:
            break
        if attempt <= retries:
            log.warning("batch: %s: exit code %d, retrying (%d of %d)", job.name, code, attempt, retries)
    seconds = round(time.perf_counter() - start, 3)
    if code == 0:
        outcome = Outcome("complete", code, attempt, seconds)
    else:
        outcome = Outcome("failed", code, attempt, seconds, error_of(job, code))
    board.update(job.name, status=outcome.status, seconds=seconds, error=outcome.error)
    return outcome


class ThreadedExecutor:
    """Runs the jobs from a thread pool, each thread attempting one job at a time through
    :meth:`run_once` (a child process here, a Ray task elsewhere); ``slots`` threads at most."""

    def __init__(self, cfg: BatchConfig, config_file: Path, device: str):
        self.cfg, self.config_file, self.device = cfg, config_file, device
        self.stopping = threading.Event()

    def slots(self, n_jobs: int) -> int:
        return self.cfg.slots()

    def run_once(self, job: Job, attempt: int, board: Board) -> int:
        """Run one attempt of ``job`` to the end; its exit code."""
        raise NotImplementedError

    def stop(self) -> None:
        """Make the running attempts checkpoint and exit 130; start no new ones."""
        raise NotImplementedError

    def run(self, jobs: list[Job], board: Board, refresh: Callable[[], None]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        pool = ThreadPoolExecutor(max_workers=self.slots(len(jobs)), thread_name_prefix="gafkit-batch")
        futures: dict[Future, Job] = {
            pool.submit(attempt_job, job, lambda j, a: self.run_once(j, a, board), self.cfg.retries, board): job
            for job in jobs}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    outcomes[futures[fut].name] = fut.result()
                refresh()
        except KeyboardInterrupt:
            self.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return outcomes


class LocalExecutor(ThreadedExecutor):
    """Runs each attempt as a child process on this machine, ``slots`` at a time."""

    def __init__(self, cfg: BatchConfig, config_file: Path, device: str):
        super().__init__(cfg, config_file, device)
        self.free: queue.Queue[int] = queue.Queue()
        for slot in range(cfg.slots()):
            self.free.put(slot)
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()

    def gpu(self, slot: int) -> int | None:
        return self.cfg.gpus[slot % len(self.cfg.gpus)] if self.cfg.gpus else None

    def run_once(self, job: Job, attempt: int, board: Board) -> int:
        if self.stopping.is_set():
            return 130
        slot = self.free.get()
        try:
            env = dict(os.environ)
            gpu = self.gpu(slot)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(gpu)
                board.update(job.name, gpu=gpu)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            cmd = run_command(job, self.config_file, self.device)
            with open(job.log, "a", encoding="utf-8") as logf:
                logf.write(f"# attempt {attempt}: {' '.join(cmd)}\n")
                logf.flush()
                with self.lock:
                    if self.stopping.is_set():
                        return 130
                    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env)
                    self.procs[job.name] = proc
                code = proc.wait()
            with self.lock:
                self.procs.pop(job.name, None)
            return code
        finally:
            self.free.put(slot)

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            procs = list(self.procs.values())
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---- summary --------------------------------------------------------------------------------------

def summary_row(job: Job, outcome: Outcome) -> dict:
    record = read_run(job.out) or {}
    stages = record.get("stages") or {}
    ok = outcome.status in ("complete", "skipped")
    return {
        "video": str(job.video), "name": job.name, "out": str(job.out), "status": outcome.status,
        "error": outcome.error, "exit_code": outcome.exit_code, "attempts": outcome.attempts,
        "seconds": outcome.seconds,
        "timings": {s: (stages.get(s) or {}).get("seconds") for s in STAGES},
        "metrics": (record.get("metrics") or {}) if ok else {},
        "log": str(job.log),
    }


def write_summary(out_dir: Path, rows: list[dict], extra: dict) -> dict:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("complete", "skipped", "failed")}
    summary = {**extra, "counts": counts, "videos": rows}
    atomic_write_bytes(out_dir / "summary.json", json.dumps(summary, indent=1).encode())
    buf = io.StringIO()
    fields = ["video", "status", "error", "attempts", "seconds", *[f"{s}_s" for s in STAGES], *METRIC_KEYS]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({"video": r["video"], "status": r["status"], "error": r["error"] or "",
                         "attempts": r["attempts"], "seconds": r["seconds"],
                         **{f"{s}_s": r["timings"][s] for s in STAGES},
                         **{k: r["metrics"].get(k) for k in METRIC_KEYS}})
    atomic_write_bytes(out_dir / "summary.csv", buf.getvalue().encode())
    return summary


def run_batch(cfg: BatchConfig, run_cfg: RunConfig, input_dir: str | Path, out_dir: str | Path, *,
              device: str = "auto") -> dict:
    """Run every video of ``input_dir`` matching ``cfg.pattern`` through :func:`gafkit.pipeline.run_pipeline`
    (in child processes) into ``out_dir``; returns the summary. Raises :class:`BatchFailedError` after
    writing the summary when any video failed."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if cfg.jobs is not None and cfg.jobs < 1:
        raise GafkitError(f"--jobs must be at least 1, got {cfg.jobs}")
    if cfg.retries < 0:
        raise GafkitError(f"--retries must be at least 0, got {cfg.retries}")
    if cfg.ray_address is not None and cfg.executor != "ray":
        raise GafkitError("--ray-address needs --executor ray")
    jobs = plan_jobs(find_videos(input_dir, cfg.pattern), out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_file = out_dir / "run_config.yaml"
    save_config(run_cfg, config_file)
    board = Board(jobs)
    outcomes: dict[str, Outcome] = {}
    todo = []
    for job in jobs:
        if run_is_current(job.out, job.video, run_cfg):
            outcomes[job.name] = Outcome("skipped", 0, 0, 0.0)
            board.update(job.name, status="skipped")
        else:
            todo.append(job)
    log.info("batch: %d videos, %d to run, %d done before", len(jobs), len(todo), len(jobs) - len(todo))
    if todo:
        if cfg.executor == "ray":
            from gafkit.batch_ray import RayExecutor

            executor: ThreadedExecutor = RayExecutor(cfg, config_file, device)
        else:
            executor = LocalExecutor(cfg, config_file, device)
        try:
            outcomes.update(_execute(executor, todo, board))
        finally:
            if hasattr(executor, "close"):
                executor.close()
    extra = {"input_dir": str(input_dir), "out_dir": str(out_dir), "pattern": cfg.pattern,
             "executor": cfg.executor, "config": str(config_file)}
    summary = write_summary(out_dir, [summary_row(j, outcomes[j.name]) for j in jobs], extra)
    failed = summary["counts"]["failed"]
    if failed:
        raise BatchFailedError(f"{out_dir / 'summary.csv'}: {failed} of {len(jobs)} videos failed")
    return summary


def _execute(executor, todo: list[Job], board: Board) -> dict[str, Outcome]:
    if not interactive():
        return executor.run(todo, board, lambda: None)
    from rich.live import Live

    with Live(board.table(), console=stderr, refresh_per_second=2, transient=False) as live:
        outcomes = executor.run(todo, board, lambda: live.update(board.table()))
        live.update(board.table())
    return outcomes
