"""Conditioning video: the T frames of a clip rendered headless from one fixed camera.

Input frames are already normalised into [-1,1]^3 (glTF axes: +Y up, front faces +Z). The camera
is fixed per clip (front, or a seeded random azimuth/elevation) and its distance is the smallest at
which the whole [-1,1]^3 cube projects inside the image, so framing depends only on the view
direction: never on the frame (real motion stays visible) nor on the asset.

Camera conventions of `RenderedClip` (what the shards store):
- `intrinsics` K [3,3] in pixels, OpenCV: u = column, v = row, pixel centres at integer
  coordinates, so the image centre is ((W-1)/2, (H-1)/2).
- `extrinsics` [4,4] world-to-camera, OpenCV axes: x right, y down, z forward (into the scene).
  A world point p lands at pixel (u, v) with [u v 1]^T ~ K @ (extrinsics @ [p 1]^T)[:3].
- `azimuth_deg` about +Y from +Z toward +X, `elevation_deg` above the XZ plane, `distance` from
  the origin, which the camera looks at.

Rendering is pyrender over EGL (Mesa llvmpipe on CPU machines, the GPU driver elsewhere) or OSMesa.
PyOpenGL binds its platform once, when OpenGL is first imported, so pyrender is imported lazily
here after `PYOPENGL_PLATFORM` is chosen; import this module before anything that imports pyrender.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import io
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np

from pipelines import materials, surface

# Debian/Ubuntu packages per platform, named in the RuntimeError when rendering cannot start.
EGL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"
OSMESA_PACKAGES = "libosmesa6"
OSMESA_MIN_PYOPENGL = (3, 1, 10)  # 3.1.0 (pyrender's pin) lacks OSMesaCreateContextAttribs
INSTALL_HINT = (
    f"install EGL with `apt-get install {EGL_PACKAGES}` (works with pyrender's PyOpenGL 3.1.0), "
    f"or OSMesa with `apt-get install {OSMESA_PACKAGES}` plus `pip install PyOpenGL==3.1.10`"
)


@dataclass
class RenderConfig:
    resolution: int = 518  # square RGBA frames; 518 px is DINOv2's input size
    # front: from +Z (glTF's front) looking along -Z at the origin; random: azimuth/elevation drawn
    # uniformly (in degrees) from the ranges below with the caller's per-clip rng.
    camera: Literal["front", "random"] = "front"
    yfov_deg: float = 40.0  # vertical = horizontal field of view (square image)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    elevation_deg: tuple[float, float] = (-10.0, 40.0)  # must stay inside (-90, 90)
    fill: float = 0.95  # the [-1,1]^3 cube's projection spans this fraction of the image (margin for AA)
    # auto: $PYOPENGL_PLATFORM if set, else EGL if it initialises, else OSMesa; one platform per process.
    platform: Literal["auto", "egl", "osmesa"] = "auto"
    color: tuple[float, float, float] = (0.75, 0.75, 0.75)  # linear RGB when the asset has no colours
    textures: bool = True  # the materials' base colour / emissive textures (False: vertex colours only)
    max_texture_size: int = 2048  # larger textures are downscaled first (frames are 518 px)
    # Lights, fixed in the camera's frame (tuned by eye on grey spheres: shape reads, nothing clips).
    ambient: float = 0.2  # linear
    key_light: float = 2.5  # directional, from the camera's upper left
    fill_light: float = 1.0  # directional, from the camera's right, slightly below


@dataclass
class Appearance:
    """What a clip looks like beyond vertex colours (bake.Baked + materials.load)."""

    texcoords_V22: np.ndarray  # TEXCOORD_0/1 per vertex
    face_material_F: np.ndarray  # glTF material index per face (-1: the default material)
    materials: dict[int, materials.Material]


@dataclass
class RenderedClip:
    png: list[bytes]  # T RGBA PNGs (straight alpha), transparent background
    intrinsics: np.ndarray  # [3,3] float64, pixels, OpenCV (see the module docstring)
    extrinsics: np.ndarray  # [4,4] float64 world-to-camera, OpenCV axes: x right, y down, z forward
    azimuth_deg: float
    elevation_deg: float
    distance: float


# ---------------------------------------------------------------------------------------------
# Camera maths (pure numpy)

_CUBE = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])


def _look_at_rotation(back: np.ndarray) -> np.ndarray:
    """[3,3] columns (right, up, back) of an OpenGL camera whose -Z looks along -back, +Y up."""
    back = back / np.linalg.norm(back)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)  # |elevation| < 90 keeps this non-degenerate
    return np.stack([right, np.cross(back, right), back], axis=1)


def view_direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector from the origin to the camera."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])


def fit_distance(azimuth_deg: float, elevation_deg: float, yfov_deg: float, fill: float) -> float:
    """Smallest distance at which all of [-1,1]^3 projects within `fill` of the image half-width.

    A corner p with camera coordinates x = p.right, y = p.up at depth d - p.back stays inside when
    max(|x|, |y|) / (d - p.back) <= fill * tan(yfov/2); the cube is convex, so its corners suffice.
    """
    rot = _look_at_rotation(view_direction(azimuth_deg, elevation_deg))
    local = _CUBE @ rot  # [8,3] (x, y, back-component) per corner
    t = fill * np.tan(np.deg2rad(yfov_deg) / 2)
    return float((local[:, 2] + np.abs(local[:, :2]).max(axis=1) / t).max())


def camera_pose(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera-to-world [4,4] in OpenGL axes (pyrender's), looking at the origin."""
    back = view_direction(azimuth_deg, elevation_deg)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = _look_at_rotation(back), distance * back
    return pose


def opencv_extrinsics(pose_gl: np.ndarray) -> np.ndarray:
    """World-to-camera [4,4] in OpenCV axes from an OpenGL camera-to-world pose (flip y and z)."""
    rot = np.diag([1.0, -1.0, -1.0]) @ pose_gl[:3, :3].T
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = rot, -rot @ pose_gl[:3, 3]
    return ext


def intrinsics(resolution: int, yfov_deg: float) -> np.ndarray:
    f = resolution / 2 / np.tan(np.deg2rad(yfov_deg) / 2)
    c = (resolution - 1) / 2  # OpenGL's image centre in OpenCV's pixel-centres-at-integers convention
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Headless GL platform and the per-process renderer cache

_LOCK = threading.Lock()  # a GL context is current on one thread at a time
# ONE OffscreenRenderer per process, resized when another resolution is asked for. Not one per
# resolution: pyrender's EGL contexts share the device's display, and deleting any of them calls
# eglTerminate on it, which breaks every other live context (measured: EGL_BAD_DISPLAY at exit).
_RENDERER: Any = None
_PLATFORM: str | None = None  # the platform PyOpenGL was bound to in this process


def egl_works(library: str = "libEGL.so.1") -> bool:
    """Whether EGL initialises a display the way pyrender will (first EGL device), via ctypes.

    Loading libEGL is not enough: libglvnd's libEGL loads without any vendor (Mesa's libEGL_mesa,
    or NVIDIA's), and Mesa's software device needs the swrast DRI driver from libgl1-mesa-dri.
    Probing through ctypes leaves PyOpenGL unimported, so OSMesa can still be chosen after a failure.
    """
    try:
        egl = ctypes.CDLL(library)
    except OSError:
        return False
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    egl.eglTerminate.argtypes = [ctypes.c_void_p]
    query = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
    get_display = egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    if query and get_display:
        query_fn = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))(query)
        count = ctypes.c_int(0)
        if not query_fn(0, None, ctypes.byref(count)) or count.value < 1:
            return False
        devices = (ctypes.c_void_p * count.value)()
        if not query_fn(count.value, devices, ctypes.byref(count)) or count.value < 1:
            return False
        display_fn = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)(get_display)
        display = display_fn(0x313F, devices[0], None)  # EGL_PLATFORM_DEVICE_EXT, as pyrender does
    else:
        egl.eglGetDisplay.restype = ctypes.c_void_p
        egl.eglGetDisplay.argtypes = [ctypes.c_void_p]
        display = egl.eglGetDisplay(None)  # EGL_DEFAULT_DISPLAY, pyrender's fallback
    if not display or not egl.eglInitialize(display, None, None):
        return False
    egl.eglTerminate(display)
    return True


def osmesa_works(library: str = "libOSMesa.so.8") -> bool:
    """Whether libOSMesa loads and the installed PyOpenGL is new enough for pyrender's OSMesa path."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return _pyopengl_version() >= OSMESA_MIN_PYOPENGL


def _pyopengl_version() -> tuple[int, ...]:
    from OpenGL.version import __version__  # the package root, not OpenGL.platform: binds nothing

    return tuple(int(p) for p in __version__.split(".")[:3] if p.isdigit())


def choose_platform(requested: str) -> str:
    """The PyOpenGL platform to use; sets PYOPENGL_PLATFORM when it is not already set."""
    env = os.environ.get("PYOPENGL_PLATFORM")
    if requested == "auto":
        if env:
            chosen = env
        elif egl_works():
            chosen = "egl"
        elif osmesa_works():
            chosen = "osmesa"
        else:
            raise RuntimeError(f"headless rendering is unavailable: neither EGL nor OSMesa initialises; {INSTALL_HINT}")
    elif requested in ("egl", "osmesa"):
        chosen = requested
        if env and env != chosen:
            raise RuntimeError(f"RenderConfig.platform={requested!r} but PYOPENGL_PLATFORM={env!r} is set")
    else:
        raise ValueError(f"unknown render platform {requested!r}")
    if chosen not in ("egl", "osmesa"):
        raise RuntimeError(f"PYOPENGL_PLATFORM={chosen!r} is not a headless platform; use egl or osmesa")
    if _PLATFORM is not None and _PLATFORM != chosen:
        raise RuntimeError(f"this process already renders with {_PLATFORM!r}; PyOpenGL binds one platform per process")
    if "OpenGL.platform" in sys.modules and env is None:
        # Someone imported OpenGL (e.g. pyrender) before us: PyOpenGL picked a windowing platform.
        raise RuntimeError("OpenGL was imported before pipelines.render chose a headless platform; "
                           "set PYOPENGL_PLATFORM=egl (or osmesa) or import pipelines.render first")
    if chosen == "osmesa" and _pyopengl_version() < OSMESA_MIN_PYOPENGL:
        raise RuntimeError("OSMesa rendering needs PyOpenGL>=3.1.10 (pyrender pins 3.1.0): `pip install PyOpenGL==3.1.10`")
    os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


def _renderer(resolution: int, requested: str) -> Any:
    """The process's OffscreenRenderer at `resolution`: creating a GL context costs ~0.1-0.3 s."""
    global _PLATFORM, _RENDERER
    platform = choose_platform(requested)
    if _RENDERER is None:
        packages = EGL_PACKAGES if platform == "egl" else OSMESA_PACKAGES
        try:
            import pyrender

            _RENDERER = pyrender.OffscreenRenderer(resolution, resolution)
        except Exception as e:  # PyOpenGL raises ImportError/OSError/AttributeError/AssertionError... by what is missing
            raise RuntimeError(f"headless rendering with PYOPENGL_PLATFORM={platform} failed ({type(e).__name__}: {e}); "
                               f"install the Debian packages: apt-get install {packages}") from e
        _PLATFORM = platform
        if platform == "osmesa":
            # pyrender takes OSMesa for a context without framebuffer objects and then draws to the
            # default buffer: RGB only (no alpha) and no multisampling. Mesa's OSMesa core context
            # has FBOs, so take pyrender's offscreen path, the same one EGL uses: identical RGBA.
            _RENDERER._platform.supports_framebuffers = lambda: True
    # Both platforms draw into pyrender's framebuffer objects, which it resizes in place.
    _RENDERER.viewport_width = _RENDERER.viewport_height = resolution
    return _RENDERER


@contextlib.contextmanager
def offscreen(resolution: int, platform: str = "auto") -> Iterator[Any]:
    """The process's pyrender OffscreenRenderer at `resolution`, held for the `with` body (one GL
    context, current on one thread at a time): every module that draws goes through here."""
    with _LOCK:
        yield _renderer(resolution, platform)


@atexit.register
def release_renderers() -> None:
    """Free the cached GL context (also run at exit, before the libraries unload under it)."""
    global _RENDERER
    with _LOCK:
        if _RENDERER is not None:
            renderer, _RENDERER = _RENDERER, None
            renderer.delete()


# ---------------------------------------------------------------------------------------------
# Rendering


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    # Multisampling resolves edge pixels against the (0,0,0,0) background, i.e. premultiplied by
    # coverage; PNG means straight alpha, so divide it out (else edges darken when composited).
    rgb, a = rgba[..., :3].astype(np.float32), rgba[..., 3:].astype(np.float32)
    straight = np.where(a > 0, np.clip(rgb * 255 / np.maximum(a, 1) + 0.5, 0, 255), 0).astype(np.uint8)
    buf = io.BytesIO()
    # Fixed encoder settings (and no metadata) keep the bytes identical for identical pixels.
    Image.fromarray(np.concatenate([straight, rgba[..., 3:]], axis=-1), "RGBA").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _light_pose(cam_pose: np.ndarray, toward_light_cam: np.ndarray) -> np.ndarray:
    """World pose of a directional light shining from `toward_light_cam` (camera axes) to the scene."""
    pose = np.eye(4)
    pose[:3, :3] = cam_pose[:3, :3] @ _look_at_rotation(np.asarray(toward_light_cam, float))
    return pose


def render_clip(
    vertices_TV3: np.ndarray,
    faces: np.ndarray,
    colors_V4: np.ndarray | None,
    cfg: RenderConfig,
    rng: np.random.Generator,
    appearance: Appearance | None = None,
) -> RenderedClip:
    """Render T frames of one topology from one camera; `rng` is drawn only for camera="random".

    colors_V4: per-vertex linear RGBA in [0,1] (the material's base colour factor x COLOR_0), or
    None for `cfg.color`. `appearance` adds each face's material: base colour and emissive
    textures sampled at the vertices' UVs, and its alpha mode (OPAQUE ignores alpha, MASK cuts
    out what is below the cutoff, BLEND blends). Faces are drawn double-sided (source meshes are
    often open or inconsistently wound) with smooth area-weighted normals recomputed per frame.
    """
    verts = np.asarray(vertices_TV3, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if verts.ndim != 3 or verts.shape[2] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected vertices [T,V,3] and faces [F,3], got {verts.shape} and {faces.shape}")
    if not np.isfinite(verts).all() or np.abs(verts).max() > 1 + 1e-4:
        raise ValueError("vertices must be finite and normalised into [-1,1]^3 (the framing assumes it)")
    if cfg.camera == "random":
        azimuth = float(rng.uniform(*cfg.azimuth_deg))
        elevation = float(rng.uniform(*cfg.elevation_deg))
    elif cfg.camera == "front":
        azimuth, elevation = 0.0, 0.0
    else:
        raise ValueError(f"unknown camera {cfg.camera!r}")
    if not abs(elevation) < 90:
        raise ValueError(f"elevation {elevation} must lie in (-90, 90)")
    distance = fit_distance(azimuth, elevation, cfg.yfov_deg, cfg.fill)
    pose = camera_pose(azimuth, elevation, distance)
    if colors_V4 is None:
        rgba = np.concatenate([np.tile(np.asarray(cfg.color, np.float32), (verts.shape[1], 1)),
                               np.ones((verts.shape[1], 1), np.float32)], axis=1)
    else:
        rgba = np.asarray(colors_V4, np.float32)
    if appearance is None or not cfg.textures:
        appearance = Appearance(np.zeros((verts.shape[1], 2, 2), np.float32), np.full(len(faces), -1),
                                {-1: materials.Material()})

    with offscreen(cfg.resolution, cfg.platform) as renderer:
        import pyrender

        parts = [_part(pyrender, faces, rgba, appearance, m) for m in np.unique(appearance.face_material_F)]
        scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0), ambient_light=(cfg.ambient,) * 3)
        depth = distance - _CUBE @ pose[:3, 2]  # the cube's corner depths bound every vertex's depth
        camera = pyrender.PerspectiveCamera(yfov=np.deg2rad(cfg.yfov_deg), aspectRatio=1.0,
                                            znear=0.5 * depth.min(), zfar=2.0 * depth.max())
        scene.add(camera, pose=pose)
        # Lights are fixed in the camera's frame, so every clip and view is shaded alike.
        scene.add(pyrender.DirectionalLight(intensity=cfg.key_light), pose=_light_pose(pose, [-1.0, 1.0, 0.8]))
        scene.add(pyrender.DirectionalLight(intensity=cfg.fill_light), pose=_light_pose(pose, [1.0, -0.2, 0.6]))
        png, node = [], None
        for v in verts:
            normals = surface.vertex_normals(v, faces).astype(np.float32)
            v32 = v.astype(np.float32)
            # Primitives built directly (not via trimesh): exact normals, no processing, and no
            # pyrender bounds call, whose np.infty numpy 2 removed (Mesh.bounds is reached only
            # through Scene.bounds, used for shadows and the viewer, neither of which runs here).
            prims = [pyrender.Primitive(positions=v32[p.vertices], normals=normals[p.vertices], indices=p.faces,
                                        color_0=p.colors, texcoord_0=p.uv, material=p.material) for p in parts]
            if node is not None:
                scene.remove_node(node)  # the renderer frees its GL buffers on the next render
            node = scene.add(pyrender.Mesh(prims))
            rgba_img, _ = renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
            png.append(_png(np.ascontiguousarray(rgba_img)))
    return RenderedClip(png, intrinsics(cfg.resolution, cfg.yfov_deg), opencv_extrinsics(pose), azimuth, elevation, distance)


@dataclass
class _Part:
    """The faces of one material, on their own vertices (positions and normals change per frame)."""

    vertices: np.ndarray  # [v] indices into the clip's vertices
    faces: np.ndarray  # [f,3] uint32 into `vertices`
    colors: np.ndarray  # [v,4] float32
    uv: np.ndarray | None  # [v,2] float32, OpenGL's texture origin (v flipped from glTF's)
    material: Any


def _part(pyrender, faces: np.ndarray, rgba: np.ndarray, appearance: Appearance, index: int) -> _Part:
    mat = appearance.materials[int(index)]
    f = faces[appearance.face_material_F == index]
    # pyrender multiplies vertex colours into the emissive term too: the vertices carry COLOR_0
    # alone (the bake's colours over the material's factor) and the factor goes to the material.
    factor = np.asarray(mat.base_color_factor, np.float32)
    colors = np.divide(rgba, factor, out=np.ones_like(rgba), where=factor > 0)
    if mat.alpha_mode == "MASK" and mat.base_color is None:  # a face is cut out by its vertex alpha
        f = f[(colors[f, 3] >= mat.alpha_cutoff).any(axis=1)]
    used, local = np.unique(f, return_inverse=True)
    colors = np.ascontiguousarray(colors[used])
    base_alpha = float(np.median(colors[:, 3]) * factor[3]) if len(colors) else 1.0
    if mat.alpha_mode != "BLEND":
        colors[:, 3] = 1.0  # OPAQUE ignores alpha; MASK is resolved into the texture below
    uv, base, emissive = None, None, None
    if mat.base_color is not None:
        uv = mat.uv(appearance.texcoords_V22[used])
        uv[:, 1] = 1.0 - uv[:, 1]  # glTF's v runs down the image; pyrender uploads it with v up
        base = _gl_texture(pyrender, mat.base_color, mat.alpha_mode, mat.alpha_cutoff, base_alpha)
    if mat.emissive is not None and mat.emissive_shares_uv():
        emissive = _gl_texture(pyrender, mat.emissive, "OPAQUE", 0.0, 1.0)
    # pyrender's shader multiplies the emissive factor in twice (factor x texture x factor):
    # its square root gives the factor once.
    material = pyrender.MetallicRoughnessMaterial(
        baseColorFactor=tuple(float(c) for c in factor[:3]) + (float(factor[3]) if mat.alpha_mode == "BLEND" else 1.0,),
        baseColorTexture=base, metallicFactor=0.0, roughnessFactor=0.7,
        emissiveFactor=tuple(float(np.sqrt(max(c, 0.0))) for c in mat.emissive_factor), emissiveTexture=emissive,
        alphaMode="BLEND" if mat.alpha_mode in ("MASK", "BLEND") else "OPAQUE", doubleSided=True)
    return _Part(used, local.reshape(-1, 3).astype(np.uint32), colors, uv, material)


def _gl_texture(pyrender, tex: materials.Texture, alpha_mode: str, cutoff: float, factor_alpha: float):
    rgba = tex.rgba
    if alpha_mode == "OPAQUE":
        rgba = rgba.copy()
        rgba[..., 3] = 255
    elif alpha_mode == "MASK":  # texels fully in or out; pyrender has no cutoff of its own
        rgba = rgba.copy()
        rgba[..., 3] = np.where(rgba[..., 3] / 255.0 * factor_alpha >= cutoff, 255, 0)
    sampler = pyrender.Sampler(magFilter=tex.mag_filter, minFilter=tex.min_filter or 9987,  # LINEAR_MIPMAP_LINEAR
                               wrapS=tex.wrap_s, wrapT=tex.wrap_t)
    return pyrender.Texture(source=np.ascontiguousarray(rgba), source_channels="RGBA", sampler=sampler)
