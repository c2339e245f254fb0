"""Conditioning video: the T frames of a clip rendered headless from one fixed camera.

The camera is fixed per clip (front, or a seeded random azimuth/elevation) and framed on the
clip's bounding sphere over ALL frames, so the framing never changes within a clip and real
motion stays visible. Rendering is pyrender over EGL (Mesa llvmpipe on CPU machines) or OSMesa.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

# Debian packages each platform needs; named in the error when neither works.
PACKAGES = {"egl": "libegl1 libegl-mesa0 libgl1-mesa-dri", "osmesa": "libosmesa6 (and PyOpenGL>=3.1.10)"}


@dataclass
class RenderConfig:
    resolution: int = 518  # square RGBA frames; 518 px is DINOv2's input size
    camera: Literal["front", "random"] = "front"  # front: from +Z (glTF's front) looking at the origin
    yfov_deg: float = 40.0
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)  # ranges for camera="random"
    elevation_deg: tuple[float, float] = (-10.0, 40.0)
    fill: float = 0.9  # fraction of the image height the clip's bounding sphere spans
    platform: Literal["auto", "egl", "osmesa"] = "auto"  # auto: $PYOPENGL_PLATFORM, else egl
    color: tuple[float, float, float, float] = (0.75, 0.75, 0.75, 1.0)  # when the asset has no colour


@dataclass
class RenderedClip:
    png: list[bytes]  # T RGBA PNG images, transparent background
    intrinsics: np.ndarray  # [3,3] pixels, OpenCV convention (pixel centres at integers)
    extrinsics: np.ndarray  # [4,4] world-to-camera, OpenCV axes: x right, y down, z forward
    azimuth_deg: float
    elevation_deg: float
    distance: float


def camera_pose(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera-to-world [4,4] in OpenGL axes (looks along -Z, +Y up), looking at the origin."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    eye = distance * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(back, right), back, eye
    return pose


def opencv_extrinsics(pose_gl: np.ndarray) -> np.ndarray:
    """World-to-camera in OpenCV axes from an OpenGL camera-to-world pose."""
    flip = np.diag([1.0, -1.0, -1.0])
    rot = flip @ pose_gl[:3, :3].T
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = rot, -rot @ pose_gl[:3, 3]
    return ext


def intrinsics(resolution: int, yfov_deg: float) -> np.ndarray:
    f = resolution / 2 / np.tan(np.deg2rad(yfov_deg) / 2)
    c = (resolution - 1) / 2  # OpenGL's image centre, with OpenCV's pixel-centre convention
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


_RENDERERS: dict = {}


def _renderer(resolution: int, platform: str):
    """One OffscreenRenderer per process and size: creating a GL context costs ~100 ms."""
    if platform != "auto":
        os.environ.setdefault("PYOPENGL_PLATFORM", platform)
    else:
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if not hasattr(np, "infty"):
        np.infty = np.inf  # pyrender 0.1.45 still uses the alias numpy 2 removed
    import pyrender

    key = (resolution, os.environ["PYOPENGL_PLATFORM"])
    if key not in _RENDERERS:
        try:
            _RENDERERS[key] = pyrender.OffscreenRenderer(resolution, resolution)
        except Exception as e:  # OpenGL raises a zoo of types when the platform library is absent
            need = PACKAGES.get(key[1], "an OpenGL platform")
            raise RuntimeError(
                f"headless rendering with PYOPENGL_PLATFORM={key[1]} failed ({type(e).__name__}: {e}); "
                f"install the Debian packages {need}"
            ) from e
    return _RENDERERS[key]


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def render_clip(
    vertices_TV3: np.ndarray, faces: np.ndarray, colors_V4: np.ndarray | None, cfg: RenderConfig, rng: np.random.Generator
) -> RenderedClip:
    import pyrender
    import trimesh

    if cfg.camera == "random":
        azimuth = float(rng.uniform(*cfg.azimuth_deg))
        elevation = float(rng.uniform(*cfg.elevation_deg))
    else:
        azimuth, elevation = 0.0, 0.0
    radius = float(np.linalg.norm(vertices_TV3, axis=-1).max())
    half_fov = np.deg2rad(cfg.yfov_deg) / 2
    # The bounding sphere (over all frames) spans `fill` of the image height.
    distance = radius / np.sin(half_fov * cfg.fill)
    pose = camera_pose(azimuth, elevation, distance)

    renderer = _renderer(cfg.resolution, cfg.platform)
    scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0), ambient_light=(0.3, 0.3, 0.3))
    camera = pyrender.PerspectiveCamera(yfov=np.deg2rad(cfg.yfov_deg), aspectRatio=1.0, znear=max(distance - radius * 1.5, 1e-3), zfar=distance + radius * 1.5)
    scene.add(camera, pose=pose)
    # Key light from the camera, fill light from above: shading is the same for every clip.
    scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=3.0), pose=pose)
    scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=1.5), pose=camera_pose(azimuth, elevation + 60, distance))
    colors = colors_V4 if colors_V4 is not None else np.tile(np.asarray(cfg.color, np.float32), (vertices_TV3.shape[1], 1))
    colors_u8 = np.clip(np.asarray(colors) * 255 + 0.5, 0, 255).astype(np.uint8)

    png = []
    node = None
    for verts in vertices_TV3:
        tm = trimesh.Trimesh(verts, faces, vertex_colors=colors_u8, process=False)
        if node is not None:
            scene.remove_node(node)
        node = scene.add(pyrender.Mesh.from_trimesh(tm, smooth=True))
        rgba, _ = renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
        png.append(_png(np.ascontiguousarray(rgba)))
    return RenderedClip(png, intrinsics(cfg.resolution, cfg.yfov_deg), opencv_extrinsics(pose), azimuth, elevation, float(distance))
