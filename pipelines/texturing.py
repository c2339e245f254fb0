"""Vertex colours for a registered mesh sequence from its input video (the paper's texturing step).

The first frame's mesh takes the colour of the pixel each visible vertex projects to (bilinear,
through the registration's camera); a vertex is visible when it is in front of the rasterised
depth at its pixel (within `depth_tolerance` of the depth range) and inside the object mask.
Hidden vertices take the colour of the nearest visible one. Every later frame is coloured from
the frame before it, vertex by nearest vertex: the generated frames have different topologies
(one marching-cubes mesh each) but, registered, lie on top of each other, so the texture follows
the surface through the sequence as the paper propagates it from the first frame, instead of
re-projecting every frame (which would let colours swim with the generation's jitter).
"""
from __future__ import annotations

import numpy as np

from pipelines import raster

GREY = np.array([200, 200, 200, 255], np.uint8)


def project_colors(vertices_cam: np.ndarray, faces: np.ndarray, frame_HW4: np.ndarray, K: np.ndarray,
                   depth_tolerance: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(colors [V,4] uint8, visible [V] bool) of camera-frame vertices seen in one RGBA frame."""
    frame = np.asarray(frame_HW4)
    H, W = frame.shape[:2]
    depth, _ = raster.rasterize(vertices_cam, faces, K, H, W)
    uv, z = raster.project(vertices_cam, K)
    px = np.rint(np.clip(np.nan_to_num(uv, nan=-1.0), -1, max(H, W))).astype(np.int64)  # NaN (z = 0): off-image
    inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H) & (z > 0)
    visible = np.zeros(len(vertices_cam), bool)
    hit = np.flatnonzero(inside)
    finite = depth[np.isfinite(depth)]
    tol = depth_tolerance * (float(finite.max() - finite.min()) if finite.size else 1.0) + 1e-6
    d = depth[px[hit, 1], px[hit, 0]]
    visible[hit] = (z[hit] <= d + tol) & (frame[px[hit, 1], px[hit, 0], 3] > 127)
    colors = np.tile(GREY, (len(vertices_cam), 1))
    if visible.any():
        colors[visible, :3] = _bilinear(frame[..., :3], uv[visible])
        colors[~visible] = colors[visible][_nearest(vertices_cam[visible], vertices_cam[~visible])]
    return colors, visible


def propagate(prev_vertices: np.ndarray, prev_colors: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Colours [V,4] of `vertices` from the nearest vertex of the previous (registered) frame."""
    if len(prev_vertices) == 0:
        return np.tile(GREY, (len(vertices), 1))
    return prev_colors[_nearest(prev_vertices, vertices)]


def sequence_colors(meshes_cam: list[tuple[np.ndarray, np.ndarray]], first_frame_HW4: np.ndarray,
                    K: np.ndarray) -> list[np.ndarray]:
    """Per-frame vertex colours [V_t,4] uint8: projected on the first frame, then propagated."""
    out: list[np.ndarray] = []
    prev_v, prev_c = np.zeros((0, 3)), np.zeros((0, 4), np.uint8)
    for t, (v, f) in enumerate(meshes_cam):
        if t == 0 and len(f):
            c, _ = project_colors(v, f, first_frame_HW4, K)
        else:
            c = propagate(prev_v, prev_c, v)
        out.append(c)
        if len(v):
            prev_v, prev_c = v, c
    return out


def _nearest(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    if len(queries) == 0:
        return np.zeros(0, np.int64)
    return cKDTree(np.asarray(points, np.float64)).query(np.asarray(queries, np.float64))[1]


def _bilinear(image_HWC: np.ndarray, uv: np.ndarray) -> np.ndarray:
    H, W = image_HWC.shape[:2]
    x = np.clip(uv[:, 0], 0, W - 1)
    y = np.clip(uv[:, 1], 0, H - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image_HWC.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)
