"""A generated mesh sequence as ONE animated .glb that plays it (any glTF viewer).

One node per frame, all under a root; a STEP animation of each node's scale shows node k
(scale 1) only during [k/fps, (k+1)/fps) and hides it (scale 0) otherwise. Frames may have
different topologies, which a morph-target animation could not express.
"""
from __future__ import annotations

import numpy as np

from pipelines import surface
from pipelines.gltf_write import Channel, GltfBuilder, Primitive


def sequence_glb(meshes: list[tuple[np.ndarray, np.ndarray]], fps: float = 8.0, color=(0.8, 0.8, 0.8, 1.0)) -> bytes:
    """meshes: T (vertices [V,3], faces [F,3]); an empty frame becomes an empty node."""
    if not meshes:
        raise ValueError("no frames to export")
    b = GltfBuilder()
    material = b.add_material(base_color=color)
    root = b.add_node(name="sequence")
    T = len(meshes)
    times = np.arange(T, dtype=np.float64) / fps
    channels = []
    for k, (v, f) in enumerate(meshes):
        mesh = None
        if len(f):
            prim = Primitive(np.asarray(v, np.float64), np.asarray(f, np.int64),
                             normals=surface.vertex_normals(np.asarray(v, np.float64), np.asarray(f, np.int64)), material=material)
            mesh = b.add_mesh([prim], name=f"frame_{k:04d}")
        node = b.add_node(mesh=mesh, parent=root, scale=(1.0, 1.0, 1.0) if k == 0 else (0.0, 0.0, 0.0), name=f"frame_{k:04d}")
        visible = (np.arange(T) == k).astype(np.float64)
        channels.append(Channel(node, "scale", times, np.repeat(visible[:, None], 3, axis=1), interpolation="STEP"))
    b.add_animation(channels, name="sequence")
    return b.to_glb()
