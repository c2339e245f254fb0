"""A generated mesh sequence as ONE animated .glb that plays it (any glTF viewer).

One node per frame, all under a root; a STEP animation of each node's scale shows node k
(scale 1) only during [k/fps, (k+1)/fps) and hides it (scale 0) otherwise. Frames may have
different topologies, which a morph-target animation could not express.
"""
from __future__ import annotations

import numpy as np

from pipelines import surface
from pipelines.gltf_write import Channel, GltfBuilder, Primitive


def sequence_glb(meshes: list[tuple[np.ndarray, np.ndarray]], fps: float = 8.0, color=(0.8, 0.8, 0.8, 1.0),
                 colors: list[np.ndarray] | None = None, camera: tuple[float, float] | None = None) -> bytes:
    """meshes: T (vertices [V,3], faces [F,3]); an empty frame becomes an empty node.

    colors: per frame sRGB uint8 [V,3|4] vertex colours (written as linear COLOR_0, which the
    material's base colour multiplies: give color white to show them as they are).
    camera: (yfov radians, aspect ratio) of a camera at the origin looking down -z (+y up), the
    view of the input video when the meshes are registered to it (jobs.generate)."""
    if not meshes:
        raise ValueError("no frames to export")
    if colors is not None and len(colors) != len(meshes):
        raise ValueError(f"{len(colors)} colour arrays for {len(meshes)} frames")
    b = GltfBuilder()
    material = b.add_material(base_color=color)
    if camera is not None:
        b.add_node(camera=b.add_camera(camera[0], camera[1], znear=0.01), name="input_camera")
    root = b.add_node(name="sequence")
    T = len(meshes)
    times = np.arange(T, dtype=np.float64) / fps
    channels = []
    for k, (v, f) in enumerate(meshes):
        mesh = None
        if len(f):
            rgb = None if colors is None else (np.asarray(colors[k], np.float64)[:, :3] / 255.0) ** 2.2  # sRGB -> linear
            prim = Primitive(np.asarray(v, np.float64), np.asarray(f, np.int64),
                             normals=surface.vertex_normals(np.asarray(v, np.float64), np.asarray(f, np.int64)),
                             colors=rgb, material=material)
            mesh = b.add_mesh([prim], name=f"frame_{k:04d}")
        node = b.add_node(mesh=mesh, parent=root, scale=(1.0, 1.0, 1.0) if k == 0 else (0.0, 0.0, 0.0), name=f"frame_{k:04d}")
        visible = (np.arange(T) == k).astype(np.float64)
        channels.append(Channel(node, "scale", times, np.repeat(visible[:, None], 3, axis=1), interpolation="STEP"))
    b.add_animation(channels, name="sequence")
    return b.to_glb()


GL_FROM_CV = np.array([1.0, -1.0, -1.0])  # OpenCV camera axes (y down, z forward) -> glTF's (y up, z back)


def write_sequence(rows: list[dict], frames_THW4: np.ndarray, folder, fps: float = 8.0, preview_size: int = 256) -> dict:
    """A predicted sequence on disk (rows as jobs.registry.predict returns them):

    - frame_0000.obj ...: each frame's registered mesh with its vertex colours, in the input
      camera's glTF frame (camera at the origin looking down -z, +y up);
    - sequence.glb: the same meshes as one animated, vertex-coloured glTF with the input camera
      as a camera node (open it in a viewer and look through that camera: it shows the video's view);
    - preview.mp4: input | mesh from the input camera | turntable (pipelines.sequence_video);
    - registration.json: intrinsics, canonical->camera extrinsics, silhouette IoU per frame.
    Returns {name: path} of what was written."""
    import json
    from pathlib import Path

    import trimesh

    from pipelines.sequence_video import preview_mp4

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    K = np.asarray(rows[0]["intrinsics"], np.float64)
    H, W = np.asarray(frames_THW4).shape[1:3]
    gl = [(np.asarray(r["vertices_camera"], np.float64) * GL_FROM_CV, np.asarray(r["faces"], np.int64)) for r in rows]
    colors = [np.asarray(r["colors"], np.uint8) for r in rows]
    for k, ((v, f), c) in enumerate(zip(gl, colors)):
        trimesh.Trimesh(v, f, vertex_colors=c, process=False).export(out / f"frame_{k:04d}.obj")
    yfov = 2 * np.arctan(H / 2 / K[1, 1])
    paths = {"frames": out / "frame_0000.obj", "sequence": out / "sequence.glb", "preview": out / "preview.mp4",
             "registration": out / "registration.json"}
    paths["sequence"].write_bytes(sequence_glb(gl, fps=fps, color=(1.0, 1.0, 1.0, 1.0), colors=colors,
                                               camera=(float(yfov), W / H)))
    size = preview_size - preview_size % 2
    paths["preview"].write_bytes(preview_mp4(np.asarray(frames_THW4), [(r["vertices_camera"], r["faces"], r["colors"])
                                                                        for r in rows], K, fps=fps, size=size))
    paths["registration"].write_text(json.dumps({
        "intrinsics": K.tolist(), "extrinsics": np.asarray(rows[0]["extrinsics"]).tolist(),
        "silhouette_iou": [float(r["silhouette_iou"]) for r in rows],
        "frames": "frame_k.obj vertices are in the input camera's glTF frame: OpenCV camera coordinates x (1,-1,-1)",
    }, indent=1))
    return paths
