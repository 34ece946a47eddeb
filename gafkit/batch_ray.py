"""The Ray executor of ``gafkit batch`` (``--executor ray``, needs ``pip install 'gafkit[cluster]'``).

Each attempt of a video is one Ray task that starts ``python -m gafkit run ...`` as a child process on
whichever node Ray schedules it, so one run's crash stays in its process exactly as with the local
executor, and retries, skipping and the summary are the same code (:mod:`gafkit.batch`). A task asks
Ray for one GPU -- Ray then sets ``CUDA_VISIBLE_DEVICES`` for it -- or, with ``--device cpu`` or on a
cluster without GPUs, for one CPU. Every node must see the input and output paths under the same
names (a shared filesystem) and have gafkit installed in the Python that runs its Ray workers.

Without ``--ray-address`` the command starts a local Ray instance (``--jobs`` CPUs, the GPUs Ray
finds) and stops it at the end; with an address it joins that cluster and leaves it running.
"""

from __future__ import annotations

import threading
from pathlib import Path

from gafkit.batch import BatchConfig, Board, Job, ThreadedExecutor, run_command
from gafkit.console import log
from gafkit.errors import GafkitError


def _attempt(cmd_tail: list[str], log_path: str) -> int:
    """Runs on a Ray worker: one ``gafkit run`` child process with its output appended to
    ``log_path``; its exit code (130 when the task was cancelled, after the child checkpointed)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    cmd = [sys.executable, *cmd_tail]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as logf:
        logf.write(f"# ray task on {socket.gethostname()} (CUDA_VISIBLE_DEVICES="
                   f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}): {' '.join(cmd)}\n")
        logf.flush()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return proc.wait()
        except KeyboardInterrupt:  # ray.cancel(): let the run checkpoint like on Ctrl-C
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            return 130


class RayExecutor(ThreadedExecutor):
    """Submits one Ray task per attempt; a driver thread per running video waits for it."""

    def __init__(self, cfg: BatchConfig, config_file: Path, device: str):
        try:
            import ray
        except ImportError:
            raise GafkitError("--executor ray needs Ray: pip install 'gafkit[cluster]'") from None
        if cfg.gpus:
            raise GafkitError("--gpus is for the local executor; with --executor ray, Ray assigns the GPUs")
        super().__init__(cfg, config_file.resolve(), device)
        self.ray = ray
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, log_to_driver=False)
            else:
                import os

                ray.init(num_cpus=cfg.jobs or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.num_gpus = 0 if device == "cpu" else 1
        if self.num_gpus and not gpus:
            if device.startswith("cuda"):
                raise GafkitError(f"--device {device}: the Ray cluster has no GPUs")
            self.num_gpus = 0  # auto on a CPU-only cluster
        self.task = ray.remote(num_cpus=1, num_gpus=self.num_gpus, max_retries=0)(_attempt)
        self.refs: dict[str, object] = {}
        self.lock = threading.Lock()
        log.info("batch: Ray at %s, %s per run", ray.get_runtime_context().gcs_address,
                 "1 GPU" if self.num_gpus else "1 CPU")

    def slots(self, n_jobs: int) -> int:
        # Ray queues what the cluster cannot run yet; --jobs still caps the runs in flight.
        return self.cfg.jobs or n_jobs

    def run_once(self, job: Job, attempt: int, board: Board) -> int:
        if self.stopping.is_set():
            return 130
        absolute = Job(job.name, job.video.resolve(), job.out.resolve(), job.log.resolve())
        # Workers start their own interpreter: the task gets the command without ours.
        device = "cuda" if self.num_gpus else self.device
        cmd_tail = run_command(absolute, self.config_file, device)[1:]
        with self.lock:
            ref = self.task.remote(cmd_tail, str(absolute.log))
            self.refs[job.name] = ref
        try:
            return int(self.ray.get(ref))
        except self.ray.exceptions.TaskCancelledError:
            return 130
        except self.ray.exceptions.RayError as err:  # the worker or its node died: worth a retry
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            with open(absolute.log, "a", encoding="utf-8") as logf:
                logf.write(f"ray: {err.__class__.__name__}: {first}\n")
            return 1
        finally:
            with self.lock:
                self.refs.pop(job.name, None)

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            refs = list(self.refs.values())
        for ref in refs:
            self.ray.cancel(ref)

    def close(self) -> None:
        if self.owns_ray:
            self.ray.shutdown()
