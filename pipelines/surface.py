"""Area-weighted surface sampling kept as (face, barycentric), so samples can be re-evaluated
on any frame of an animation that shares the topology."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _face_area_volume(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, float]:
    area = np.empty(f.shape[0])
    vol6 = 0.0
    for i in range(f.shape[0]):
        a, b, c = v[f[i, 0]], v[f[i, 1]], v[f[i, 2]]
        ux, uy, uz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
        wx, wy, wz = c[0] - a[0], c[1] - a[1], c[2] - a[2]
        cx, cy, cz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
        area[i] = 0.5 * np.sqrt(cx * cx + cy * cy + cz * cz)
        # a . (b x c) = a . ((b-a) x (c-a))
        vol6 += a[0] * cx + a[1] * cy + a[2] * cz
    return area, vol6 / 6.0


def face_area_volume(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-face area [F] (float64) and the enclosed signed volume (positive when faces wind
    counter-clockwise seen from outside, by the divergence theorem).

    One compiled pass: ~20x faster than gather + np.cross + norm on the ~1M-face watertight
    frames, and bit-identical to it (same operations in the same order, no FMA contraction)."""
    return _face_area_volume(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))


def face_areas_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-face area [F] and unit normal [F,3] (zero for degenerate faces)."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
    return 0.5 * norm, normals


def sample_barycentric(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n area-weighted samples as face index [n] (int64) and barycentric weights [n,3] (float64)."""
    areas, _ = face_area_volume(vertices, faces)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has no area to sample")
    face_idx = rng.choice(len(faces), size=n, p=areas / total)
    # Uniform on the triangle: fold the unit square onto the simplex.
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    bary = np.stack([1 - u - v, u, v], axis=1)
    return face_idx.astype(np.int64), bary


def positions(vertices: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Points [n,3] of samples (face_idx, bary) on this mesh."""
    return np.einsum("nk,nkd->nd", bary, vertices[faces[face_idx]])


def evaluate(vertices: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Points [n,6] xyz+unit face normal for samples (face_idx, bary) on this mesh."""
    tri = vertices[faces[face_idx]]
    xyz = np.einsum("nk,nkd->nd", bary, tri)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1, keepdims=True)
    normals = np.divide(cross, norm, out=np.zeros_like(cross), where=norm > 0)
    return np.concatenate([xyz, normals], axis=1)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n area-weighted points [n,6] xyz+normal."""
    face_idx, bary = sample_barycentric(vertices, faces, n, rng)
    return evaluate(vertices, faces, face_idx, bary)


@nb.njit(cache=True)
def _vertex_normal_sums(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    # Face cross products (length = 2 * area: the weight) in the vertices' dtype, summed per
    # vertex in float64 in face order: the same sums as np.cross + np.bincount, ~10x faster.
    n = np.zeros((vertices.shape[0], 3))
    for i in range(faces.shape[0]):
        a, b, c = vertices[faces[i, 0]], vertices[faces[i, 1]], vertices[faces[i, 2]]
        ux, uy, uz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
        wx, wy, wz = c[0] - a[0], c[1] - a[1], c[2] - a[2]
        cx, cy, cz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
        for k in range(3):
            j = faces[i, k]
            n[j, 0] += cx
            n[j, 1] += cy
            n[j, 2] += cz
    return n


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted smooth normals [V,3] float64; vertices in no (or only degenerate) faces get +Z."""
    vertices = np.asarray(vertices)
    if vertices.dtype not in (np.float32, np.float64):
        vertices = vertices.astype(np.float64)
    n = _vertex_normal_sums(vertices, np.asarray(faces, np.int64))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 1e-20, n / np.maximum(norm, 1e-20), [0.0, 0.0, 1.0])
