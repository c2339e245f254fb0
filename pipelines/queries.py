"""Temporally aligned encoder queries (ShapeGen4D, "temporally aligned latents").

Farthest point sampling runs once, on surface samples of frame 1 of the SOURCE mesh (not the
watertight one: it has no correspondence across frames). Each query is kept as (face,
barycentric) and re-evaluated on every baked frame, so query k of every frame sits on the same
physical point. The `independent` mode (FPS per frame) is the paper's ablation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import fpsample
import numpy as np

from pipelines import surface


@dataclass
class QueryConfig:
    mode: Literal["aligned", "independent"] = "aligned"
    num_candidates: int = 32768  # surface samples FPS picks from
    fps_tree_height: int = 7  # fpsample bucket height: 7 is its recommendation for ~32k points
    project_to_watertight: bool = False  # also snap each frame's queries onto its watertight surface


def fps(points_N3: np.ndarray, n: int, tree_height: int) -> np.ndarray:
    """Indices of n farthest-point samples, starting at point 0 (deterministic)."""
    if n > len(points_N3):
        raise ValueError(f"cannot pick {n} of {len(points_N3)} points")
    idx = fpsample.bucket_fps_kdline_sampling(np.ascontiguousarray(points_N3, dtype=np.float32), n, h=tree_height, start_idx=0)
    return np.asarray(idx, dtype=np.int64)


def pick(vertices_V3: np.ndarray, faces: np.ndarray, n: int, cfg: QueryConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n FPS queries on one frame as (face [n], barycentric [n,3])."""
    face_idx, bary = surface.sample_barycentric(vertices_V3, faces, max(cfg.num_candidates, n), rng)
    keep = fps(surface.positions(vertices_V3, faces, face_idx, bary), n, cfg.fps_tree_height)
    return face_idx[keep], bary[keep]


def propagate(vertices_TV3: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Queries [T,n,6] (xyz + normal of the deformed face) on every frame."""
    return np.stack([surface.evaluate(v, faces, face_idx, bary) for v in vertices_TV3])


def independent(vertices_TV3: np.ndarray, faces: np.ndarray, n: int, cfg: QueryConfig, rng: np.random.Generator) -> np.ndarray:
    """Ablation: FPS on each frame separately, so query k of two frames are unrelated points."""
    return np.stack([surface.evaluate(v, faces, *pick(v, faces, n, cfg, rng)) for v in vertices_TV3])


def project(points_n6: np.ndarray, scene) -> np.ndarray:
    """Snap points onto a watertight mesh: closest point and that triangle's normal.

    `scene` is an open3d RaycastingScene holding the frame's watertight mesh.
    """
    import open3d as o3d

    ans = scene.compute_closest_points(o3d.core.Tensor(points_n6[:, :3].astype(np.float32)))
    return np.concatenate([ans["points"].numpy(), ans["primitive_normals"].numpy()], axis=1).astype(np.float64)
