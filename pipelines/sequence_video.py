"""Preview video of a reconstruction: the input clip next to its predicted mesh sequence.

Each MP4 frame holds three square panels side by side, all over white:
1. the input frame (straight-alpha RGBA composited over white);
2. the mesh rendered from the input camera, so it should cover the input's object exactly;
3. a turntable: the sequence from a fixed camera framed on the bounding sphere of every frame's
   vertices, turned about the vertical axis through its centre by 360 deg * t / T, so the
   unseen sides and the motion are visible too.

Meshes come in the input camera's OpenCV frame (x right, y down, z forward, camera at the origin,
pixel centres at integer coordinates) and are drawn with pipelines.render's per-process offscreen
renderer.
"""
from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from pipelines import render, surface

# H.264 first (small, plays everywhere); MPEG-4 part 2 when the PyAV wheel has no H.264 encoder.
CODECS = ("libx264", "libopenh264", "mpeg4")
GREY = 0.5  # linear; ~186/255 once pyrender applies its 1/2.2 gamma, so it stands out from white
AMBIENT = 0.25  # linear
HEADLIGHT = 2.4  # directional from the camera: ambient + 2.4/pi ~ 1 where the surface faces it
TURNTABLE_YFOV_DEG = 40.0
TURNTABLE_ELEVATION_DEG = 20.0  # seen from slightly above, so tops read too
TURNTABLE_FILL = 0.9  # the bounding sphere's image spans this fraction of the panel

Mesh = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # vertices [V,3], faces [F,3], colors [V,4] or None


def preview_mp4(
    frames_THW4: np.ndarray,
    meshes: list[Mesh],
    K: np.ndarray,
    fps: float = 8.0,
    size: int = 256,
) -> bytes:
    """MP4 bytes (yuv420p, T frames at `fps`) of [input | mesh from the input camera | turntable].

    meshes: T (vertices [V,3], faces [F,3], colors [V,4] uint8 sRGB or None for grey); F may be 0.
    K: the input frames' intrinsics (H x W pixels), OpenCV convention.
    """
    frames = np.asarray(frames_THW4)
    if frames.ndim != 4 or frames.shape[3] != 4 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGBA frames [T,H,W,4], got {frames.dtype} {frames.shape}")
    if len(meshes) != len(frames) or not len(frames):
        raise ValueError(f"expected one mesh per frame and at least one frame, got {len(meshes)} for {len(frames)}")
    if size <= 0 or size % 2 or not fps > 0:
        raise ValueError(f"size must be even and positive (yuv420p) and fps positive, got {size} and {fps}")
    panels = np.full((len(frames), size, 3 * size, 3), 255, np.uint8)
    panels[:, :, :size] = [_over_white(f, size) for f in frames]
    panels[:, :, size:] = _render_meshes(meshes, np.asarray(K, np.float64), frames.shape[1:3], size)
    return _encode(panels, fps)


def _over_white(rgba: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    # Composite before resizing: resampling straight alpha would bleed the hidden colours of
    # transparent pixels into the object's edge.
    a = rgba[..., 3:].astype(np.float32) / 255
    rgb = rgba[..., :3] * a + 255 * (1 - a)
    return np.asarray(Image.fromarray(np.round(rgb).astype(np.uint8)).resize((size, size), Image.BILINEAR))


def _render_meshes(meshes: list[Mesh], K: np.ndarray, hw: tuple[int, int], size: int) -> np.ndarray:
    """[T, size, 2*size, 3] uint8: the input-camera panel and the turntable panel per frame."""
    gl = np.array([1.0, -1.0, -1.0])  # OpenCV camera frame -> pyrender's OpenGL axes (y up, z back)
    verts = [np.asarray(v, np.float64).reshape(-1, 3) * gl for v, _, _ in meshes]
    points = np.concatenate(verts)
    lo, hi = (points.min(0), points.max(0)) if len(points) else (np.zeros(3), np.zeros(3))
    centre = (lo + hi) / 2
    radius = max(float(np.linalg.norm(points - centre, axis=1).max(initial=0.0)), 1e-6)
    half_fov = np.deg2rad(TURNTABLE_YFOV_DEG) / 2
    # A sphere at distance d images as a disc of angular radius asin(r/d): solve for the fill.
    distance = radius / np.sin(np.arctan(TURNTABLE_FILL * np.tan(half_fov)))

    sx, sy = size / hw[1], size / hw[0]
    far = 2 * (float(np.linalg.norm(centre)) + radius)  # the input camera sits at the origin
    with render.offscreen(size) as renderer:
        import pyrender

        # pyrender puts pixel edges at integers; K has centres there, hence the half pixel.
        input_cam = pyrender.IntrinsicsCamera(K[0, 0] * sx, K[1, 1] * sy, (K[0, 2] + 0.5) * sx, (K[1, 2] + 0.5) * sy,
                                              znear=1e-3 * far, zfar=far)
        turntable_cam = pyrender.PerspectiveCamera(yfov=2 * half_fov, aspectRatio=1.0,
                                                   znear=0.5 * (distance - radius), zfar=2 * (distance + radius))
        scene = pyrender.Scene(bg_color=(1.0, 1.0, 1.0, 1.0), ambient_light=(AMBIENT,) * 3)
        input_node = scene.add(input_cam, pose=np.eye(4))
        turntable_node = scene.add(turntable_cam)
        light = scene.add(pyrender.DirectionalLight(intensity=HEADLIGHT))
        material = pyrender.MetallicRoughnessMaterial(metallicFactor=0.0, roughnessFactor=0.7, doubleSided=True)
        out = np.empty((len(meshes), size, 2 * size, 3), np.uint8)
        for t, ((_, faces, colors), v) in enumerate(zip(meshes, verts)):
            faces = np.asarray(faces, np.int64).reshape(-1, 3)
            node = scene.add(_mesh(pyrender, v, faces, colors, material)) if len(faces) else None
            # Turning the camera by -theta about the vertical axis equals turning the mesh by +theta;
            # the light rides on the camera either way.
            pose = render.camera_pose(-360.0 * t / len(meshes), TURNTABLE_ELEVATION_DEG, distance)
            pose[:3, 3] += centre
            scene.set_pose(turntable_node, pose)
            for panel, cam in enumerate((input_node, turntable_node)):
                scene.main_camera_node = cam
                scene.set_pose(light, scene.get_pose(cam))  # a directional light shines along its -z
                out[t, :, panel * size:(panel + 1) * size] = renderer.render(scene)[0]
            if node is not None:
                scene.remove_node(node)
    return out


def _mesh(pyrender, v: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, material):
    if colors is None:
        linear = np.full((len(v), 4), GREY, np.float32)
    else:
        # pyrender multiplies COLOR_0 in linear space and outputs with a 1/2.2 gamma: undo it here
        # so a fully lit vertex shows its given colour.
        linear = (np.asarray(colors, np.float32) / 255) ** 2.2
    linear[:, 3] = 1.0  # drawn opaque
    normals = surface.vertex_normals(v, faces).astype(np.float32)
    # A Primitive built directly (as in pipelines.render): exact normals and no trimesh processing.
    prim = pyrender.Primitive(positions=v.astype(np.float32), normals=normals, indices=faces.astype(np.uint32),
                              color_0=linear, material=material)
    return pyrender.Mesh([prim])


def _codec() -> str:
    import av

    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except av.codec.codec.UnknownCodecError:
            continue
    raise RuntimeError(f"PyAV has none of the encoders {CODECS}")


def _encode(images: np.ndarray, fps: float) -> bytes:
    import av

    codec = _codec()
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        # PyAV takes a rational rate; denominators up to 1001 keep NTSC rates (30000/1001) exact.
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = images.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}  # near-transparent: flat white and thin edges survive
        else:
            stream.bit_rate = int(4 * images.shape[1] * images.shape[2] * fps)  # ~4 bits per pixel
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return buf.getvalue()
