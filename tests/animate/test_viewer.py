"""``gafkit view``: slider edits, cameras, the port check, and the page in a real headless browser."""

from __future__ import annotations

import math
import shutil
import socket
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.errors import GafkitError
from gafkit.heads.base import axis_angle_to_matrix
from gafkit.recon.evaluate import load_avatar
from gafkit.recon.viewer import PoseEdit, ViewerConfig, check_port, client_camera, edited_params, run_view

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless Chromium in a sandbox-less, network-less container; WebGL through SwiftShader.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slider_edits_compose_with_the_timeline_frame(avatar):
    bundle = load_avatar(avatar)
    model, base = bundle.model, bundle.params[3]
    same = edited_params(base, PoseEdit(), model)
    assert all(torch.equal(a, b) for a, b in zip(same.tensors().values(), base.tensors().values()))
    jaw = model.expression_names.index("jawOpen")
    edit = PoseEdit(expr={jaw: 0.4, 0: -5.0}, head=(20.0, 0.0, 0.0), eyes=(0.0, 10.0))
    p = edited_params(base, edit, model)
    assert p.expr[0, jaw] == pytest.approx(min(1.0, float(base.expr[0, jaw]) + 0.4))
    assert p.expr[0, 0] == 0.0  # clamped to the ICT range
    # Yaw in the head's own frame: R = R_base R_y(20 deg), about the pivot (which does not move).
    r = axis_angle_to_matrix(p.rotation[0])
    r_base = axis_angle_to_matrix(base.rotation[0])
    rel = r_base.T @ r
    assert rel[1, 1] == pytest.approx(1.0, abs=1e-5) and math.degrees(math.atan2(rel[0, 2], rel[2, 2])) == pytest.approx(20, abs=1e-3)
    assert torch.equal(p.translation, base.translation)
    # Both eyes turn by the same pitch.
    for eye in (slice(0, 3), slice(3, 6)):
        turn = axis_angle_to_matrix(p.eyes[0, eye]) @ axis_angle_to_matrix(base.eyes[0, eye]).T
        assert math.degrees(math.acos((turn.trace().item() - 1) / 2)) == pytest.approx(10, abs=1e-2)


def test_browser_camera_reproduces_the_source_camera(avatar):
    import viser.transforms as vtf

    cam = load_avatar(avatar).cameras[0]
    c2w = cam.c2w[0].double().numpy()
    fov = 2 * math.atan(0.5 * cam.height / float(cam.K[0, 1, 1]))
    got = client_camera(vtf.SO3.from_matrix(c2w[:3, :3]).wxyz, c2w[:3, 3], fov, 1.0, cam.width)
    assert torch.allclose(got.w2c, cam.w2c, atol=1e-5) and torch.allclose(got.K, cam.K, atol=1e-3)
    wide = client_camera(vtf.SO3.from_matrix(c2w[:3, :3]).wxyz, c2w[:3, 3], fov, 2.0, 100)
    assert (wide.width, wide.height) == (100, 50)


def test_a_port_in_use_is_a_clear_error(avatar):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["--device", "cpu", "view", str(avatar), "--port", str(port)])
        assert result.exit_code == 2, result.output
        assert f"127.0.0.1:{port}: the port is in use" in result.output and "--port" in result.output
        with pytest.raises(GafkitError, match="in use"):
            check_port("127.0.0.1", port)
    with pytest.raises(GafkitError, match="1..65535"):
        check_port("127.0.0.1", 70000)


def _wait(predicate, seconds: float, what: str):
    """Poll ``predicate`` until it returns something other than None/False; return that."""
    end = time.time() + seconds
    while time.time() < end:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _view_region(page) -> np.ndarray:
    """The middle of the page, where the avatar is drawn (the GUI panel sits on the right)."""
    from io import BytesIO

    from PIL import Image

    shot = np.asarray(Image.open(BytesIO(page.screenshot())).convert("RGB")).astype(int)
    h, w = shot.shape[:2]
    return shot[h // 4: 3 * h // 4, w // 4: w // 2 + w // 8]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_viewer_page_shows_the_avatar_and_follows_sliders_and_the_timeline(avatar, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    viewer = run_view(ViewerConfig(resolution=96), avatar, port=free_port(), device="cpu")
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(viewer.url)
            page.get_by_text("Head pose").wait_for(timeout=60_000)
            _wait(lambda: viewer.renders > 0, 60, "the first render")
            # The page shows the render: a dark head on the white background in the middle of the view.
            region = _wait(lambda: r if (r := _view_region(page)).min() < 150 else None, 30, "the avatar image in the page")
            first_image, renders = viewer.last_image.copy(), viewer.renders

            client = next(iter(viewer.server.get_clients().values()))
            view_before = (client.camera.position.copy(), client.camera.wxyz.copy())
            # Click near the right end (about +50 degrees) of the head-yaw slider's track (the timeline's frame slider comes
            # first). Arrow keys would also turn the page's camera; a click moves only the slider.
            track = page.get_by_role("slider").nth(1).locator(
                "xpath=ancestor::div[contains(@class,'mantine-Slider-root')][1]")
            box = track.bounding_box()
            page.mouse.click(box["x"] + 0.95 * box["width"], box["y"] + box["height"] / 2)
            _wait(lambda: viewer.edit.head[0] > 30, 30, "the yaw slider to reach the server")
            _wait(lambda: viewer.renders > renders, 60, "a render of the turned head")
            assert np.abs(viewer.last_image.astype(int) - first_image.astype(int)).mean() > 2
            # The page's camera stayed put: the new image comes from the slider alone.
            assert np.allclose(client.camera.position, view_before[0]) and np.allclose(client.camera.wxyz, view_before[1])
            turned = _wait(lambda: r if np.abs((r := _view_region(page)) - region).mean() > 1 else None, 30,
                           "the turned head in the page")
            page.screenshot(path=str(tmp_path / "viewer.png"))

            page.get_by_text("play", exact=True).click()
            _wait(lambda: viewer.frame >= 2, 30, "the timeline to play")
            assert viewer.playing and turned is not None
            browser.close()
    finally:
        viewer.stop()


def test_view_command_serves_the_page_and_stops_on_sigterm(avatar):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gafkit", "--device", "cpu", "view", str(avatar), "--port", str(port),
                             "--resolution", "32"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        def page():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return None if proc.poll() is None else "exited"

        html = _wait(page, 90, "the viewer page")
        assert html != "exited" and "<html" in html.lower()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert f"http://127.0.0.1:{port}" in out
    finally:
        if proc.poll() is None:
            proc.kill()
