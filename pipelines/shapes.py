"""Closed, outward-oriented triangle meshes of simple solids, as the procedural assets use them,
and the float32 round trip a glTF file imposes on every stored number."""
from __future__ import annotations

import numpy as np


def capped_cylinder(radius: float, length: float, segments: int, rings: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed cylinder along +y from y=0 to y=length: `rings`+1 vertex rings plus two cap centres."""
    theta = 2 * np.pi * np.arange(segments) / segments
    y = length * np.arange(rings + 1) / rings
    ring = np.stack([radius * np.cos(theta), np.zeros(segments), -radius * np.sin(theta)], 1)
    side = np.repeat(ring[None], rings + 1, 0)
    side[:, :, 1] = y[:, None]
    verts = np.concatenate([side.reshape(-1, 3), [[0.0, 0.0, 0.0], [0.0, length, 0.0]]])
    i, j = np.meshgrid(np.arange(rings), np.arange(segments), indexing="ij")
    a, b = i * segments + j, i * segments + (j + 1) % segments
    c, d = a + segments, b + segments
    faces = [np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]
    bottom, top = len(verts) - 2, len(verts) - 1
    js = np.arange(segments)
    faces.append(np.stack([np.full(segments, bottom), (js + 1) % segments, js], 1))
    last = rings * segments
    faces.append(np.stack([np.full(segments, top), last + js, last + (js + 1) % segments], 1))
    return verts, np.concatenate(faces).astype(np.int64)


def uv_sphere(radius: float, n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed UV sphere: two pole vertices and n_lat-1 rings of n_lon vertices (no seam copies)."""
    phi = np.pi * np.arange(1, n_lat) / n_lat  # polar angle of each ring
    theta = 2 * np.pi * np.arange(n_lon) / n_lon
    ring = np.stack(
        [np.sin(phi)[:, None] * np.cos(theta), np.repeat(np.cos(phi)[:, None], n_lon, 1), -np.sin(phi)[:, None] * np.sin(theta)],
        -1,
    ).reshape(-1, 3)
    verts = radius * np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]])
    south = len(verts) - 1
    js = np.arange(n_lon)
    faces = [np.stack([np.zeros(n_lon, np.int64), 1 + js, 1 + (js + 1) % n_lon], 1)]
    i, j = np.meshgrid(np.arange(n_lat - 2), js, indexing="ij")
    a, b = 1 + i * n_lon + j, 1 + i * n_lon + (j + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    faces += [np.stack([a, c, d], -1).reshape(-1, 3), np.stack([a, d, b], -1).reshape(-1, 3)]
    base = 1 + (n_lat - 2) * n_lon
    faces.append(np.stack([np.full(n_lon, south), base + (js + 1) % n_lon, base + js], 1))
    return verts, np.concatenate(faces).astype(np.int64)


def box_grid(size: tuple[float, float, float], divisions: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Closed box centred on the origin, each side a quad grid; edge/corner vertices shared."""
    n = np.asarray(divisions)
    # Number the boundary points of the (n+1)^3 lattice; faces index through this table.
    lattice = np.stack(np.meshgrid(*(np.arange(k + 1) for k in n), indexing="ij"), -1)
    on_boundary = np.any((lattice == 0) | (lattice == n), axis=-1)
    index = np.full(lattice.shape[:3], -1, np.int64)
    index[on_boundary] = np.arange(on_boundary.sum())
    verts = (lattice[on_boundary] / n - 0.5) * np.asarray(size)
    faces = []
    for axis in range(3):
        b_ax, c_ax = (axis + 1) % 3, (axis + 2) % 3  # e_b x e_c = +e_axis
        for side in (0, n[axis]):
            sl: list[slice | int] = [slice(None)] * 3
            sl[axis] = side
            grid = index[tuple(sl)]  # 2D, axes in increasing order of (b_ax, c_ax)
            if b_ax > c_ax:
                grid = grid.T  # rows along b_ax, columns along c_ax
            if side == 0:
                grid = grid.T  # swap the in-plane axes: normal points to -axis
            p00, p10, p01, p11 = grid[:-1, :-1], grid[1:, :-1], grid[:-1, 1:], grid[1:, 1:]
            faces += [np.stack([p00, p10, p11], -1).reshape(-1, 3), np.stack([p00, p11, p01], -1).reshape(-1, 3)]
    return verts, np.concatenate(faces).astype(np.int64)


def f32(a) -> np.ndarray:
    """The float32 value the file stores, back in float64."""
    return np.asarray(a, np.float64).astype(np.float32).astype(np.float64)

