"""Sharp-edge samples (Step1X-3D's second point set), aligned across frames.

Sharp edges are found once, on frame 1 of the source mesh (dihedral angle above a threshold,
plus open boundary edges), and sampled by length. Each sample is stored as (face, barycentric)
with one barycentric weight 0, i.e. a point on an edge of an adjacent face, so it is carried
through the animation exactly like the queries. A mesh without sharp edges (a sphere) falls
back to uniform surface samples and says so in the row's stats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines import surface


@dataclass
class SharpConfig:
    angle_deg: float = 30.0  # dihedral angle between face normals above which an edge is sharp


def sharp_edges(vertices: np.ndarray, faces: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Sharp edges as (face [E], local edge k in 0..2 of that face: vertices k and k+1)."""
    _, normals = surface.face_areas_normals(vertices, faces)
    # glTF splits vertices along UV seams and hard-normal edges; weld by position so a seam
    # between two smoothly joined faces is not mistaken for an open boundary.
    scale = max(float(np.ptp(vertices, axis=0).max()), 1e-12)
    _, weld = np.unique(np.round(vertices / (scale * 1e-7)), axis=0, return_inverse=True)
    welded = weld.reshape(-1)[faces]
    # Half-edges keyed by their undirected (welded) vertex pair.
    he_face = np.repeat(np.arange(len(faces)), 3)
    he_k = np.tile(np.arange(3), len(faces))
    a = welded[he_face, he_k]
    b = welded[he_face, (he_k + 1) % 3]
    key = np.minimum(a, b) * (welded.max() + 1) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    key_s = key[order]
    starts = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
    counts = np.diff(np.r_[starts, len(key_s)])
    first = order[starts]
    sharp = counts != 2  # boundary (1) or non-manifold (>2) edges count as sharp
    pair = counts == 2
    second = order[starts[pair] + 1]
    cos = np.einsum("ij,ij->i", normals[he_face[first[pair]]], normals[he_face[second]])
    sharp[np.flatnonzero(pair)] = cos < np.cos(np.deg2rad(angle_deg))
    chosen = first[sharp]
    return he_face[chosen], he_k[chosen]


def sample_edges(
    vertices: np.ndarray, faces: np.ndarray, edge_face: np.ndarray, edge_k: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n length-weighted samples on the given edges, as (face [n], barycentric [n,3])."""
    p0 = vertices[faces[edge_face, edge_k]]
    p1 = vertices[faces[edge_face, (edge_k + 1) % 3]]
    length = np.linalg.norm(p1 - p0, axis=1)
    pick = rng.choice(len(edge_face), size=n, p=length / length.sum())
    s = rng.random(n)
    bary = np.zeros((n, 3))
    rows = np.arange(n)
    bary[rows, edge_k[pick]] = 1 - s
    bary[rows, (edge_k[pick] + 1) % 3] = s
    return edge_face[pick], bary


def sample(
    vertices: np.ndarray, faces: np.ndarray, n: int, cfg: SharpConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """(face, bary, number of sharp edges found); uniform surface samples when there are none."""
    edge_face, edge_k = sharp_edges(vertices, faces, cfg.angle_deg)
    p0 = vertices[faces[edge_face, edge_k]]
    p1 = vertices[faces[edge_face, (edge_k + 1) % 3]]
    if len(edge_face) == 0 or np.linalg.norm(p1 - p0, axis=1).sum() <= 0:
        face_idx, bary = surface.sample_barycentric(vertices, faces, n, rng)
        return face_idx, bary, 0
    face_idx, bary = sample_edges(vertices, faces, edge_face, edge_k, n, rng)
    return face_idx, bary, len(edge_face)
