"""Batched pinhole cameras in the OpenCV convention, with converters to/from OpenGL/NeRF poses.

Conventions (see docs/CONVENTIONS.md):

- camera space: x right, y down, z forward (OpenCV); ``w2c`` maps world to camera;
- pixels: pixel ``j`` covers ``[j, j + 1)`` so its centre is ``j + 0.5`` (gsplat and nvdiffrast agree);
  a camera centred on a ``W x H`` image has ``cx = W / 2``, ``cy = H / 2``;
- OpenGL/NeRF poses (``transforms.json``'s ``transform_matrix``): camera-to-world with x right, y up,
  z backward, i.e. the OpenCV camera-to-world with its y and z columns negated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.errors import GafkitError

# Multiplying a camera-to-world on the right by this flips between OpenCV and OpenGL camera axes.
_CV_GL = (1.0, -1.0, -1.0, 1.0)


def _flip_cv_gl(c2w: Tensor) -> Tensor:
    return c2w * c2w.new_tensor(_CV_GL)


def rigid_inverse(m: Float[Tensor, "*B 4 4"]) -> Float[Tensor, "*B 4 4"]:
    """Inverse of rigid 4x4 transforms (rotation + translation), exact and cheaper than ``inverse``.

    >>> rigid_inverse(torch.eye(4)[None]).shape
    torch.Size([1, 4, 4])
    """
    rot_t = m[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(m)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ m[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def _batch3(x: Tensor | Sequence[float], count: int, like: Tensor) -> Tensor:
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return t.expand(count, 3) if t.ndim == 1 else t


@dataclasses.dataclass
class Cameras:
    """A batch of ``C`` pinhole cameras sharing one image size.

    Shapes:
        K:   [C, 3, 3]  intrinsics in pixels (``fx, fy, cx, cy``; pixel centres at ``j + 0.5``)
        w2c: [C, 4, 4]  world-to-camera, OpenCV axes (x right, y down, z forward)

    >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), fov_deg=30,
    ...                        width=64, height=48)
    >>> uv, depth = cams.project(torch.zeros(1, 1, 3))
    >>> uv.tolist(), depth.tolist()
    ([[[32.0, 24.0]]], [[1.0]])
    """

    K: Float[Tensor, "C 3 3"]
    w2c: Float[Tensor, "C 4 4"]
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.K.ndim != 3 or self.K.shape[1:] != (3, 3):
            raise GafkitError(f"Cameras.K must be [C, 3, 3], got {list(self.K.shape)}")
        if self.w2c.ndim != 3 or self.w2c.shape[1:] != (4, 4) or self.w2c.shape[0] != self.K.shape[0]:
            raise GafkitError(
                f"Cameras.w2c must be [C, 4, 4] with C = {self.K.shape[0]}, got {list(self.w2c.shape)}"
            )
        if self.width <= 0 or self.height <= 0:
            raise GafkitError(f"Cameras: image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Cameras:
        """Select cameras; an integer keeps the batch dimension (``cams[2]`` has C = 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return dataclasses.replace(self, K=self.K[index], w2c=self.w2c[index])

    @property
    def device(self) -> torch.device:
        return self.K.device

    def to(self, device: torch.device | str) -> Cameras:
        return dataclasses.replace(self, K=self.K.to(device), w2c=self.w2c.to(device))

    @property
    def c2w(self) -> Float[Tensor, "C 4 4"]:
        """Camera-to-world, OpenCV axes."""
        return rigid_inverse(self.w2c)

    @property
    def centers(self) -> Float[Tensor, "C 3"]:
        """Camera positions in world space."""
        return self.c2w[:, :3, 3]

    def scaled(self, factor: float) -> Cameras:
        """The same cameras for an image ``factor`` times larger (e.g. 2 for supersampling).

        Pixel edges (not centres) scale, so ``fx, fy, cx, cy`` all multiply by ``factor``.
        """
        k = self.K.clone()
        k[:, :2] = k[:, :2] * factor
        return dataclasses.replace(
            self, K=k, width=round(self.width * factor), height=round(self.height * factor)
        )

    def world_to_camera(self, points: Float[Tensor, "C N 3"]) -> Float[Tensor, "C N 3"]:
        """Points in each camera's OpenCV frame."""
        return points @ self.w2c[:, :3, :3].transpose(1, 2) + self.w2c[:, None, :3, 3]

    def project(self, points: Float[Tensor, "C N 3"]) -> tuple[Float[Tensor, "C N 2"], Float[Tensor, "C N"]]:
        """Pixel coordinates ``(u, v)`` and camera-space depth ``z`` of world points.

        Points at or behind the camera plane get non-finite or meaningless ``uv``; check ``depth > 0``.
        """
        cam = self.world_to_camera(points)
        depth = cam[..., 2]
        pix = cam @ self.K.transpose(1, 2)
        return pix[..., :2] / depth[..., None], depth

    # ---- constructors -------------------------------------------------------------------------

    @classmethod
    def from_intrinsics(
        cls, fx: float, fy: float, cx: float, cy: float, w2c: Float[Tensor, "C 4 4"], width: int, height: int
    ) -> Cameras:
        """Cameras sharing one set of intrinsics."""
        k = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=w2c.dtype, device=w2c.device)
        return cls(K=k.expand(w2c.shape[0], 3, 3).clone(), w2c=w2c, width=width, height=height)

    @classmethod
    def look_at(
        cls,
        eye: Float[Tensor, "C 3"],
        target: Float[Tensor, "C 3"],
        up: Float[Tensor, "C 3"] | Sequence[float] = (0.0, 1.0, 0.0),
        *,
        fov_deg: float | None = None,
        focal: float | None = None,
        width: int,
        height: int,
    ) -> Cameras:
        """Cameras at ``eye`` looking at ``target`` with world ``up`` pointing up in the image.

        Give either ``fov_deg`` (vertical field of view) or ``focal`` (pixels, fx = fy); the principal
        point is the image centre.

        >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=100.0,
        ...                        width=64, height=64)
        >>> (cams.w2c[0, :3, :3].round() + 0.0).tolist()  # camera x = world x, camera y = world -y
        [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]
        """
        if (fov_deg is None) == (focal is None):
            raise GafkitError("Cameras.look_at: give exactly one of fov_deg or focal")
        if focal is None:
            focal = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
        eye = torch.as_tensor(eye, dtype=torch.float32) if not isinstance(eye, Tensor) else eye
        target = target.to(eye)
        up_t = _batch3(up, eye.shape[0], eye)
        z = torch.nn.functional.normalize(target - eye, dim=-1)
        # OpenCV y points down, so x = (-up) x z makes (x, y, z) right-handed with y opposite `up`.
        x = torch.cross(-up_t, z, dim=-1)
        if (x.norm(dim=-1) < 1e-8).any():
            raise GafkitError("Cameras.look_at: `up` is parallel to the viewing direction")
        x = torch.nn.functional.normalize(x, dim=-1)
        y = torch.cross(z, x, dim=-1)
        rot = torch.stack([x, y, z], dim=1)
        w2c = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
        w2c[:, :3, :3] = rot
        w2c[:, :3, 3] = -(rot @ eye[..., None])[..., 0]
        return cls.from_intrinsics(focal, focal, width / 2, height / 2, w2c, width, height)

    @classmethod
    def from_opengl_c2w(
        cls, c2w: Float[Tensor, "C 4 4"], K: Float[Tensor, "C 3 3"], width: int, height: int
    ) -> Cameras:
        """Cameras from OpenGL/NeRF camera-to-world poses (x right, y up, z backward)."""
        return cls(K=K, w2c=rigid_inverse(_flip_cv_gl(c2w)), width=width, height=height)

    def to_opengl_c2w(self) -> Float[Tensor, "C 4 4"]:
        """OpenGL/NeRF camera-to-world poses (``transforms.json``'s ``transform_matrix``)."""
        return _flip_cv_gl(self.c2w)

    # ---- transforms.json ------------------------------------------------------------------------

    def to_nerf_frames(self) -> list[dict[str, Any]]:
        """One ``transforms.json`` frame entry per camera (no ``file_path``; the caller adds it).

        Keys: ``fl_x, fl_y, cx, cy, w, h, transform_matrix`` (4x4 nested lists, OpenGL camera-to-world).

        >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=100.0,
        ...                        width=64, height=48)
        >>> frame = cams.to_nerf_frames()[0]
        >>> frame["fl_x"], frame["cx"], frame["h"]
        (100.0, 32.0, 48)
        """
        k = self.K.detach().double().cpu()
        mats = self.to_opengl_c2w().detach().double().cpu()
        return [
            {
                "fl_x": float(k[i, 0, 0]),
                "fl_y": float(k[i, 1, 1]),
                "cx": float(k[i, 0, 2]),
                "cy": float(k[i, 1, 2]),
                "w": self.width,
                "h": self.height,
                "transform_matrix": mats[i].tolist(),
            }
            for i in range(len(self))
        ]

    @classmethod
    def from_nerf_frames(
        cls, frames: Sequence[dict[str, Any]], defaults: dict[str, Any] | None = None
    ) -> Cameras:
        """Cameras from ``transforms.json`` frame entries; keys missing in a frame come from ``defaults``.

        ``defaults`` is usually the file's top level (which commonly holds the shared intrinsics). A
        focal length may also come as ``camera_angle_x`` (horizontal field of view, radians); ``cx``
        and ``cy`` default to the image centre. All frames must share one image size.

        >>> cams = Cameras.from_nerf_frames([{"transform_matrix": torch.eye(4).tolist()}],
        ...                                 {"fl_x": 50.0, "w": 64, "h": 48})
        >>> cams.K[0].tolist()
        [[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]]
        """
        if not frames:
            raise GafkitError("transforms.json: no frames")
        defaults = defaults or {}
        ks, mats, sizes = [], [], set()
        for i, frame in enumerate(frames):
            entry = {**defaults, **frame}
            try:
                w, h = int(entry["w"]), int(entry["h"])
                if "fl_x" in entry:
                    fx = float(entry["fl_x"])
                elif "camera_angle_x" in entry:
                    fx = 0.5 * w / math.tan(float(entry["camera_angle_x"]) / 2)
                else:
                    raise KeyError("fl_x")
                fy = float(entry.get("fl_y", fx))
                cx, cy = float(entry.get("cx", w / 2)), float(entry.get("cy", h / 2))
                mat = torch.tensor(entry["transform_matrix"], dtype=torch.float64)
            except KeyError as err:
                raise GafkitError(f"transforms.json: frame {i} has no {err.args[0]!r}") from None
            if mat.shape != (4, 4):
                raise GafkitError(f"transforms.json: frame {i} transform_matrix is not 4x4")
            sizes.add((w, h))
            ks.append(torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64))
            mats.append(mat)
        if len(sizes) > 1:
            raise GafkitError(f"transforms.json: frames have different image sizes {sorted(sizes)}")
        ((w, h),) = sizes
        return cls.from_opengl_c2w(torch.stack(mats).float(), torch.stack(ks).float(), w, h)
