"""``gafkit view``: a browser viewer that renders the avatar live on the server (viser).

The page (viser's web client) shows the server's render as the scene background and sends its camera
back: dragging orbits, scrolling zooms, and every camera change or slider move renders a new image
with gafkit's renderer (gsplat on CUDA; on the CPU the torch reference at a lower resolution). The
avatar sits where its source video put it, and the initial view is the source camera looking at the
head.

Controls (the GUI panel):

- Timeline: a frame slider over the driving sequence (the avatar's own, or ``driver``) and a play
  checkbox that steps through it at ``fps``.
- Head pose: yaw / pitch / roll in degrees, turned in the head's own frame about the model's pivot,
  added to the timeline frame's pose.
- Eyes: yaw / pitch in degrees for both eyes; Jaw (models with a jaw joint): rotation in degrees.
- Expression: one slider per coefficient (the first ``max_expr_sliders``), *added* to the timeline
  frame's value and clamped to the model's range (ICT blendshape weights stay in 0..1).
- Reset puts every slider back to zero.

Rendering happens on one worker thread; GUI callbacks only bump a version number, so a burst of slider
events renders the latest state once.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import threading
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.console import log
from gafkit.errors import GafkitError
from gafkit.heads.base import HeadModel, HeadParams, axis_angle_to_matrix
from gafkit.recon.avatar import render_avatar
from gafkit.recon.retarget import RetargetConfig, matrix_to_axis_angle
from gafkit.render.camera import Cameras


@dataclasses.dataclass
class ViewerConfig:
    """What ``gafkit view`` shows and how."""

    driver: Optional[Path] = None
    """Sequence on the timeline (tracked folder or parameter .npz); None = the avatar's own."""
    resolution: Optional[int] = None
    """Longer side of the rendered image; None = 512 with CUDA, 256 on the CPU (torch renderer)."""
    fps: Optional[float] = None
    """Playback rate of the timeline; None = the driver's (25 without timestamps)."""
    jpeg_quality: int = 85
    max_expr_sliders: int = 60
    """Sliders for the first this many expression coefficients (FLAME has 100 or more)."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    flame_model: Optional[Path] = None
    retarget: RetargetConfig = dataclasses.field(default_factory=RetargetConfig)


@dataclasses.dataclass
class PoseEdit:
    """What the sliders add to the timeline frame (angles in degrees)."""

    expr: dict[int, float] = dataclasses.field(default_factory=dict)
    """Expression coefficient index -> offset."""
    head: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Yaw (about the head's up axis), pitch (about its ear-to-ear axis), roll (about its nose axis)."""
    eyes: tuple[float, float] = (0.0, 0.0)
    """Yaw and pitch of both eyes."""
    jaw: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Jaw rotation about the head's x, y and z axes."""


def _euler(yaw: float, pitch: float, roll: float) -> Float[Tensor, "3 3"]:
    """R_y(yaw) R_x(pitch) R_z(roll), degrees."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = torch.tensor([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = torch.tensor([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def edited_params(base: HeadParams, edit: PoseEdit, model: HeadModel) -> HeadParams:
    """``base`` (one frame) with the slider offsets of ``edit`` applied (see the module docstring)."""
    expr = base.expr.clone()
    for index, offset in edit.expr.items():
        expr[:, index] += offset
    if model.expr_bounds is not None:
        expr = expr.clamp(*model.expr_bounds)

    def turned(aa: Tensor, angles: tuple[float, ...], local: bool) -> Tensor:
        if not any(angles):
            return aa
        r = _euler(*angles, *(0.0,) * (3 - len(angles))).to(aa)
        m = axis_angle_to_matrix(aa)
        return matrix_to_axis_angle(m @ r if local else r @ m)

    eyes = base.eyes
    if any(edit.eyes):
        eyes = torch.cat([turned(base.eyes[:, :3], edit.eyes, False), turned(base.eyes[:, 3:], edit.eyes, False)], 1)
    # The head turns in its own frame (local), the joints relative to the head (their parent).
    return dataclasses.replace(base, expr=expr, rotation=turned(base.rotation, edit.head, True), eyes=eyes,
                               jaw=turned(base.jaw, (edit.jaw[1], edit.jaw[0], edit.jaw[2]), False))  # x = pitch


def check_port(host: str, port: int) -> None:
    """Refuse a port that another program listens on (viser would silently move to the next one)."""
    if not 0 < port < 65536:
        raise GafkitError(f"--port {port}: must be 1..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # The same option the web server sets, so only a live listener counts as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno == 98:  # EADDRINUSE
                raise GafkitError(f"{host}:{port}: the port is in use by another program; choose another with "
                                  "--port") from None
            raise GafkitError(f"{host}:{port}: cannot listen there ({err.strerror or err})") from None


def client_camera(wxyz: np.ndarray, position: np.ndarray, fov: float, aspect: float, resolution: int) -> Cameras:
    """Our camera for a browser view: viser's camera-to-world rotation (OpenCV axes) and position,
    vertical field of view (radians) and aspect ratio, rendered with ``resolution`` on the longer side."""
    import viser.transforms as vtf

    if aspect >= 1:
        width, height = resolution, max(1, round(resolution / aspect))
    else:
        width, height = max(1, round(resolution * aspect)), resolution
    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    c2w[:3, 3] = position
    w2c = torch.from_numpy(np.linalg.inv(c2w)).float()[None]
    focal = 0.5 * height / math.tan(fov / 2)
    return Cameras.from_intrinsics(focal, focal, width / 2, height / 2, w2c, width, height)


class AvatarViewer:
    """The viewer server: GUI, per-client camera tracking and the render worker. ``start`` returns once
    the server listens; ``stop`` ends it."""

    def __init__(self, bundle, cfg: ViewerConfig, host: str = "127.0.0.1", port: int = 8080):
        from gafkit.recon.animate import AnimateConfig, plan_animation

        self.bundle, self.cfg, self.host, self.port = bundle, cfg, host, port
        self.timeline = plan_animation(AnimateConfig(driver=cfg.driver, retarget=cfg.retarget, fps=cfg.fps), bundle)
        cuda = bundle.params.expr.is_cuda
        self.resolution = cfg.resolution or (512 if cuda else 256)
        if self.resolution < 16:
            raise GafkitError(f"viewer resolution must be at least 16, got {self.resolution}")
        self.edit = PoseEdit()
        self.frame = 0
        self.playing = False
        self.version = 0
        self.renders = 0
        """Images rendered so far (for tests and the status line)."""
        self.last_image: np.ndarray | None = None
        self._rendered: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.server = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> AvatarViewer:
        import viser

        check_port(self.host, self.port)
        self.server = viser.ViserServer(host=self.host, port=self.port, verbose=False)
        if self.server.get_port() != self.port:  # lost a race for the port between the check and the bind
            self.server.stop()
            raise GafkitError(f"{self.host}:{self.port}: the port is in use by another program; choose another "
                              "with --port")
        try:
            self._set_initial_camera()
            self._build_gui()
        except KeyboardInterrupt:
            # The page is already served: a Ctrl-C/SIGTERM now is a normal stop, not a failed start.
            self._stop.set()
            return self
        self._thread = threading.Thread(target=self._worker, name="gafkit-view-render", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.server is not None:
            self.server.stop()

    def serve_forever(self) -> None:
        """Block until Ctrl-C / SIGTERM."""
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ---- setup ---------------------------------------------------------------------------------
    def _set_initial_camera(self) -> None:
        from gafkit.heads.base import head_center

        cam = self.timeline.cameras[0]
        with torch.no_grad():
            center = head_center(self.bundle.model, self.bundle.model(self.timeline.params[0])[0])
        c2w = cam.c2w[0].double().cpu().numpy()
        up = -c2w[:3, 1]
        self.server.scene.set_up_direction(tuple(up))
        init = self.server.initial_camera
        init.position = tuple(c2w[:3, 3])
        init.look_at = tuple(center.double().cpu().numpy())
        init.up = tuple(up)
        init.fov = 2 * math.atan(0.5 * cam.height / float(cam.K[0, 1, 1]))

    def _changed(self, *_args) -> None:
        with self._lock:
            self.version += 1

    def _build_gui(self) -> None:
        gui = self.server.gui
        model = self.bundle.model
        n = len(self.timeline)
        self.status = gui.add_markdown("starting")
        with gui.add_folder("Timeline"):
            self.frame_slider = gui.add_slider("frame", 0, max(n - 1, 1), 1, 0, disabled=n == 1)
            self.play_box = gui.add_checkbox("play", False)
            self.fps_number = gui.add_number("fps", float(self.timeline.fps), min=0.1, max=240.0, step=0.1)
        self.frame_slider.on_update(self._on_frame)
        self.play_box.on_update(self._on_play)
        self.sliders: dict[str, object] = {}
        with gui.add_folder("Head pose"):
            for name in ("yaw", "pitch", "roll"):
                self.sliders[f"head.{name}"] = gui.add_slider(name, -60.0, 60.0, 0.5, 0.0)
        if model.has_eye_joints:
            with gui.add_folder("Eyes"):
                for name in ("yaw", "pitch"):
                    self.sliders[f"eyes.{name}"] = gui.add_slider(name, -30.0, 30.0, 0.5, 0.0)
        if model.has_jaw_joint:
            with gui.add_folder("Jaw"):
                for name in ("x", "y", "z"):
                    self.sliders[f"jaw.{name}"] = gui.add_slider(name, -30.0, 30.0, 0.5, 0.0)
        bounded = model.expr_bounds is not None
        span = (model.expr_bounds[1] - model.expr_bounds[0]) if bounded else 3.0
        with gui.add_folder("Expression"):
            for i, name in enumerate(model.expression_names[: self.cfg.max_expr_sliders]):
                self.sliders[f"expr.{i}"] = gui.add_slider(name, -span, span, round(span / 100, 4), 0.0)
        for handle in self.sliders.values():
            handle.on_update(self._on_slider)
        gui.add_button("Reset").on_click(self._reset)

    # ---- GUI callbacks ---------------------------------------------------------------------------
    def _on_frame(self, _event) -> None:
        self.frame = int(self.frame_slider.value)
        self._changed()

    def _on_play(self, _event) -> None:
        self.playing = bool(self.play_box.value)

    def _on_slider(self, _event) -> None:
        value = {key: float(h.value) for key, h in self.sliders.items()}
        self.edit = PoseEdit(
            expr={int(k.split(".")[1]): v for k, v in value.items() if k.startswith("expr.") and v != 0},
            head=(value["head.yaw"], value["head.pitch"], value["head.roll"]),
            eyes=(value.get("eyes.yaw", 0.0), value.get("eyes.pitch", 0.0)),
            jaw=(value.get("jaw.x", 0.0), value.get("jaw.y", 0.0), value.get("jaw.z", 0.0)),
        )
        self._changed()

    def _reset(self, _event) -> None:
        for handle in self.sliders.values():
            handle.value = 0.0
        self.edit = PoseEdit()
        self._changed()

    # ---- rendering -------------------------------------------------------------------------------
    def params(self) -> HeadParams:
        """The parameters on screen now: the timeline frame with the slider edits."""
        return edited_params(self.timeline.params[self.frame], self.edit, self.bundle.model)

    @torch.no_grad()
    def render(self, camera: Cameras) -> np.ndarray:
        """One [H, W, 3] uint8 image of the current state from ``camera``."""
        from gafkit.recon.animate import to_uint8

        b = self.bundle
        out = render_avatar(b.avatar, b.model, self.params(), camera.to(b.params.expr.device), bg=self.timeline.bg,
                            backend=self.cfg.backend)
        return to_uint8(out.rgb[0])

    def _worker(self) -> None:
        last_step = time.perf_counter()
        while not self._stop.is_set():
            if self.playing and len(self.timeline) > 1:
                now = time.perf_counter()
                if now - last_step >= 1.0 / max(float(self.fps_number.value), 0.1):
                    last_step = now
                    self.frame_slider.value = (self.frame + 1) % len(self.timeline)  # fires _on_frame
            busy = False
            for client in list(self.server.get_clients().values()):
                try:
                    busy |= self._serve(client)
                except Exception as err:  # a client that left mid-render, or a render bug: keep serving others
                    log.warning("view: rendering for client %s failed: %s", client.client_id, err)
                    self._rendered.pop(client.client_id, None)
                    time.sleep(0.2)
            if not busy:
                self._stop.wait(0.01)

    def _serve(self, client) -> bool:
        cam = client.camera
        stamp = cam.update_timestamp
        if stamp == 0.0:
            return False  # the browser has not reported its view yet
        key = (self.version, stamp)
        if self._rendered.get(client.client_id) == key:
            return False
        start = time.perf_counter()
        camera = client_camera(cam.wxyz, cam.position, cam.fov, cam.aspect, self.resolution)
        image = self.render(camera)
        client.scene.set_background_image(image, format="jpeg", jpeg_quality=self.cfg.jpeg_quality)
        self._rendered[client.client_id] = key
        self.renders += 1
        self.last_image = image
        ms = 1e3 * (time.perf_counter() - start)
        self.status.content = (f"frame {self.frame + 1}/{len(self.timeline)} · {image.shape[1]}x{image.shape[0]} · "
                               f"{ms:.0f} ms · render {self.renders}")
        return True


def run_view(cfg: ViewerConfig, avatar_path: str | Path, *, host: str = "127.0.0.1", port: int = 8080,
             device: str = "auto") -> AvatarViewer:
    """Load the avatar and start the viewer (non-blocking); the caller serves and stops it."""
    from gafkit.device import resolve_device
    from gafkit.recon.evaluate import load_avatar

    check_port(host, port)  # before the (slow) avatar load
    bundle = load_avatar(avatar_path, resolve_device(device), flame_model=cfg.flame_model)
    return AvatarViewer(bundle, cfg, host, port).start()
