"""`gafkit batch`: a folder with two good clips and a corrupt one, run as child processes."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import pytest
from typer.testing import CliRunner

import gafkit.batch as batch_mod
from gafkit.batch import BatchConfig, Board, Job, LocalExecutor, attempt_job, plan_jobs
from gafkit.cli import app
from gafkit.config import build_config, select_preset
from gafkit.pipeline import PRESETS, read_run
from paths import EXAMPLE_VIDEO

runner = CliRunner()


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(EXAMPLE_VIDEO, folder / "alice.mp4")
    shutil.copy(EXAMPLE_VIDEO, folder / "bob.mp4")
    (folder / "broken.mp4").write_text("not a video at all")
    (folder / "notes.txt").write_text("not matched by the pattern")
    return folder


def test_batch_isolates_failures_and_resumes(videos, tmp_path, tiny_config):
    out = tmp_path / "batch out"
    args = ["--device", "cpu", "batch", str(videos), "-o", str(out), "--jobs", "2", "--preset", "fast",
            "--config", str(tiny_config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "1 of 3 videos failed" in result.output

    summary = json.loads((out / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["videos"]}
    assert set(rows) == {"alice", "bob", "broken"} and summary["counts"] == {"complete": 2, "skipped": 0, "failed": 1}
    for name in ("alice", "bob"):
        assert rows[name]["status"] == "complete" and rows[name]["error"] is None
        assert rows[name]["metrics"]["psnr"] > 5 and all(v > 0 for v in rows[name]["timings"].values())
        assert (out / name / "animate_orbit.mp4").is_file() and read_run(out / name)["status"] == "complete"
    broken = rows["broken"]
    assert broken["status"] == "failed" and broken["exit_code"] == 2 and broken["attempts"] == 1
    assert "broken.mp4" in broken["error"] and "\n" not in broken["error"]
    assert not (out / "broken" / "tracked").exists() and (out / "logs" / "broken.log").is_file()

    with open(out / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["status"] for r in table] == ["complete", "complete", "failed"]
    assert table[2]["error"] == broken["error"] and float(table[0]["psnr"]) == rows["alice"]["metrics"]["psnr"]

    # The same command again: the finished runs are skipped without a process, the broken one retried.
    stamp = (out / "alice" / "run.json").stat().st_mtime_ns
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["videos"]] == ["skipped", "skipped", "failed"]
    assert summary["videos"][0]["metrics"]["psnr"] == rows["alice"]["metrics"]["psnr"]
    assert (out / "alice" / "run.json").stat().st_mtime_ns == stamp


def test_saved_run_config_reproduces_the_preset(tmp_path):
    from gafkit.config import save_config

    cfg = build_config(select_preset(PRESETS, "demo", "default"), sets=["fit.iters=7", "track.head=ict"])
    save_config(cfg, tmp_path / "run_config.yaml")
    # The children start from the default preset and read the file: they must get the same config.
    assert build_config(PRESETS["default"](), file=tmp_path / "run_config.yaml") == cfg


def test_retries_only_crashes(tmp_path):
    jobs = [Job(name=n, video=tmp_path / f"{n}.mp4", out=tmp_path / n, log=tmp_path / f"{n}.log")
            for n in ("crashy", "user_error")]
    board = Board(jobs)
    codes = {"crashy": [1, 0], "user_error": [2, 0]}
    calls = []

    def run_once(job, attempt):
        calls.append((job.name, attempt))
        return codes[job.name][attempt - 1]

    assert attempt_job(jobs[0], run_once, retries=2, board=board).status == "complete"
    outcome = attempt_job(jobs[1], run_once, retries=2, board=board)
    assert outcome.status == "failed" and outcome.attempts == 1 and outcome.exit_code == 2
    assert calls == [("crashy", 1), ("crashy", 2), ("user_error", 1)]
    crashed = attempt_job(jobs[0], lambda j, a: 1, retries=1, board=board)
    assert crashed.status == "failed" and crashed.attempts == 2 and crashed.error == "exit code 1"


def test_each_slot_gets_its_gpu(tmp_path, monkeypatch):
    def fake_command(job, config_file, device):
        return [sys.executable, "-c", "import os; print('GPU=' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'))"]

    monkeypatch.setattr(batch_mod, "run_command", fake_command)
    jobs = plan_jobs([tmp_path / f"v{i}.mp4" for i in range(4)], tmp_path / "out")
    cfg = BatchConfig(jobs=2, gpus=(3, 5))
    executor = LocalExecutor(cfg, tmp_path / "cfg.yaml", "auto")
    outcomes = executor.run(jobs, Board(jobs), lambda: None)
    assert all(o.status == "complete" for o in outcomes.values())
    seen = {j.log.read_text().splitlines()[-1] for j in jobs}
    assert seen == {"GPU=3", "GPU=5"}


def test_plan_and_bad_arguments(tmp_path):
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    jobs = plan_jobs([a, b, tmp_path / "a" / "other.mp4"], tmp_path / "out")
    assert [j.name for j in jobs] == ["a_clip_mp4", "b_clip_mp4", "other"]
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["batch", str(tmp_path / "empty"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no files match '*.mp4'" in result.output
    result = runner.invoke(app, ["batch", str(tmp_path), "-o", str(tmp_path / "o"), "--gpus", "0,x"])
    assert result.exit_code == 2 and "--gpus" in result.output
    result = runner.invoke(app, ["batch", str(tmp_path), "-o", str(tmp_path / "o"), "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs" in result.output
    assert not (tmp_path / "o").exists()


def test_ray_executor_on_a_local_instance(videos, tmp_path, tiny_config):
    pytest.importorskip("ray")
    (videos / "bob.mp4").unlink()  # one good and one corrupt clip keep the Ray test short
    out = tmp_path / "ray out"
    args = ["--device", "cpu", "batch", str(videos), "-o", str(out), "--executor", "ray", "--jobs", "2",
            "--preset", "fast", "--config", str(tiny_config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["videos"]}
    assert summary["executor"] == "ray" and summary["counts"] == {"complete": 1, "skipped": 0, "failed": 1}
    assert rows["alice"]["metrics"]["psnr"] > 5 and (out / "alice" / "animate_self.mp4").is_file()
    assert rows["broken"]["exit_code"] == 2 and "broken.mp4" in rows["broken"]["error"]
    assert "# ray task on" in (out / "logs" / "alice.log").read_text()
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert [r["status"] for r in json.loads((out / "summary.json").read_text())["videos"]] == ["skipped", "failed"]
    result = runner.invoke(app, ["batch", str(videos), "-o", str(out), "--ray-address", "auto"])
    assert result.exit_code == 2 and "--ray-address needs --executor ray" in result.output


def test_live_table_shows_each_runs_stage(tmp_path):
    from rich.console import Console

    jobs = plan_jobs([tmp_path / "alice.mp4", tmp_path / "broken.mp4"], tmp_path / "out")
    jobs[0].out.mkdir(parents=True)
    (jobs[0].out / "run.json").write_text(json.dumps({"status": "running", "stage": "fit"}))
    board = Board(jobs)
    board.update("alice", status="running", attempt=1, started=1.0)
    board.update("broken", status="failed", error="broken.mp4: cannot decode")
    console = Console(record=True, width=120)
    console.print(board.table())
    text = console.export_text()
    alice = next(line for line in text.splitlines() if "alice" in line)
    assert "running" in alice and "fit" in alice
    assert "cannot decode" in next(line for line in text.splitlines() if "broken" in line)
