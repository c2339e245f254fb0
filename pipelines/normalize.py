"""One similarity transform per clip into [-1,1]^3, and the clip's motion statistic.

Normalising per clip, never per frame, keeps real motion (a character walking forward,
a sphere swelling) in the data: per-frame normalisation would erase it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.errors import AssetError


@dataclass
class NormalizeConfig:
    margin: float = 0.05  # the clip's union box fills [-(1-margin), 1-margin] along its longest axis


def clip_transform(vertices_TV3: np.ndarray, cfg: NormalizeConfig) -> tuple[np.ndarray, float]:
    """Centre [3] and scale such that (v - centre) * scale lies in [-1+margin, 1-margin]^3 for all frames."""
    lo = vertices_TV3.min(axis=(0, 1))
    hi = vertices_TV3.max(axis=(0, 1))
    half = float((hi - lo).max()) / 2
    if not np.isfinite(half) or half <= 0:
        raise AssetError("normalize", "degenerate_bounds", f"clip bounds {lo.tolist()}..{hi.tolist()} have no extent")
    return (lo + hi) / 2, (1.0 - cfg.margin) / half


def apply(vertices: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    return (vertices - center) * scale


@dataclass
class MotionConfig:
    # A clip whose points move less than this (mean distance from frame 1, in normalised units,
    # at the frame where they are farthest) is rejected as static. 0.01 is 0.5% of the box.
    min_motion: float = 0.01


def motion(points_TQ3: np.ndarray) -> tuple[float, float]:
    """(mean over frames, max over frames) of the mean displacement from frame 1.

    Measured on the propagated queries: they are spread evenly over the surface by FPS, so
    the statistic does not depend on how densely an artist tessellated each part.
    """
    per_frame = np.linalg.norm(points_TQ3 - points_TQ3[:1], axis=-1).mean(axis=-1)
    return float(per_frame.mean()), float(per_frame.max())
