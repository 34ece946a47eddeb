from __future__ import annotations

import json
import subprocess
import sys

import typer
from typer.testing import CliRunner

from gafkit import __version__
from gafkit.cli import app
from gafkit.cli.common import handles_errors
from gafkit.device import resolve_device
from gafkit.errors import GafkitError, InputError

runner = CliRunner()


def test_help_lists_commands_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "doctor" in result.output
    assert runner.invoke(app, ["--version"]).output.strip() == f"gafkit {__version__}"


def test_doctor_json_fields():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("python", "torch", "gsplat", "nvdiffrast", "mediapipe", "head_models", "disk", "backends", "warnings"):
        assert key in report
    assert report["cpu_path_ok"] is True
    assert report["mediapipe"]["face_models"] is True
    assert "torch" in report["backends"]["mesh"] and "torch" in report["backends"]["gaussians"]


def test_doctor_reports_missing_flame_file(tmp_path):
    result = runner.invoke(app, ["doctor", "--json", "--flame-model", str(tmp_path / "generic_model.pkl")])
    report = json.loads(result.output)
    assert report["head_models"]["flame"]["available"] is False


def test_user_errors_are_one_line_exit_2():
    demo = typer.Typer()

    @demo.command()
    @handles_errors
    def run(path: str) -> None:
        raise InputError(path, "not a video")

    result = runner.invoke(demo, ["clip.mp4"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: clip.mp4: not a video"


def test_bugs_keep_their_traceback():
    demo = typer.Typer()

    @demo.command()
    @handles_errors
    def run() -> None:
        raise ValueError("bug")

    result = runner.invoke(demo, [])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_bad_device_is_a_user_error():
    import pytest

    with pytest.raises(GafkitError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "gafkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
