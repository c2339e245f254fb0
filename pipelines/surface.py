"""Area-weighted surface sampling kept as (face, barycentric), so samples can be re-evaluated
on any frame of an animation that shares the topology."""
from __future__ import annotations

import numpy as np


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
    areas, _ = face_areas_normals(vertices, faces)
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


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted smooth normals [V,3]; vertices in no (or only degenerate) faces get +Z."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area: the weight
    idx = faces.reshape(-1)
    n = np.stack([np.bincount(idx, np.repeat(fn[:, k], 3), minlength=len(vertices)) for k in range(3)], 1)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(norm > 1e-20, n / np.maximum(norm, 1e-20), [0.0, 0.0, 1.0])
