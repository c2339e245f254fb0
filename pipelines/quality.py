"""Per-frame quality of a clip's watertight meshes against its source, and the gate on it.

The watertight step can go wrong without failing: a frame may lose most of the source (a part
dropped as a "floater", a thin piece below the grid), or the source itself may collapse for a few
frames (a morph whose faces shrink to specks) and come out as a blob of a few hundred faces among
frames of 600k. Either would train the model on frames that are not the asset. So every frame is
measured against its source, the figures go to the row's `stats`, and clips outside the
thresholds below are rejected with a stable reason (stage ``quality``):

- ``degenerate_frames``: a frame whose source surface area is under `min_area_ratio` of the
  clip's median frame (measured before any watertight work, so it costs nothing);
- ``watertight_lost_geometry``: a frame whose watertight surface covers less than
  `min_coverage` of the source's outer surface, or whose extent is under `min_extent_ratio` of
  the source's.

Coverage: points spread over the source surface (area-uniform on frame 1, carried through the
animation like the queries) are measured against the frame's watertight mesh. A point counts as
outer surface unless it lies deeper than `coverage_cells` voxels inside the watertight volume
(interior faces, doubled walls: the watertight step removes them on purpose), and as covered when
it lies within `coverage_cells` voxels of the watertight surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.errors import AssetError
from pipelines.surface import face_area_volume


@dataclass
class QualityConfig:
    enabled: bool = True  # false: record the figures, reject nothing
    min_coverage: float = 0.9  # of the source's outer surface, within coverage_cells of the watertight surface
    coverage_cells: float = 2.0  # voxels (watertight.resolution)
    min_extent_ratio: float = 0.5  # watertight bounding-box diagonal / source's
    min_area_ratio: float = 0.1  # a frame's source area / the clip's median frame's


def source_areas(vertices_TV3: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[T] surface area of every source frame."""
    return np.array([face_area_volume(v, faces)[0].sum() for v in vertices_TV3])


def check_source(areas_T: np.ndarray, cfg: QualityConfig) -> None:
    """Raise ``degenerate_frames`` when a source frame's area collapses against the clip's median."""
    if not cfg.enabled:
        return
    ratio = areas_T / max(float(np.median(areas_T)), 1e-30)
    bad = np.flatnonzero(ratio < cfg.min_area_ratio)
    if len(bad):
        raise AssetError("quality", "degenerate_frames", f"frames {bad.tolist()[:8]} have {ratio[bad].min():.3g}x the "
                         f"clip's median source area (quality.min_area_ratio={cfg.min_area_ratio:g})")


def coverage(signed_distance_P: np.ndarray, h: float, cfg: QualityConfig) -> float:
    """Share of the outer source points within coverage_cells voxels of the watertight surface,
    given their signed distances to it (negative inside)."""
    tol = cfg.coverage_cells * h
    outer = signed_distance_P > -tol
    if not outer.any():
        return 1.0  # every point deep inside: nothing of the outer surface was lost
    return float(np.mean(np.abs(signed_distance_P[outer]) <= tol))


def extent_ratio(watertight_V3: np.ndarray, source_points_P3: np.ndarray) -> float:
    src = np.linalg.norm(source_points_P3.max(0) - source_points_P3.min(0))
    return float(np.linalg.norm(watertight_V3.max(0) - watertight_V3.min(0)) / max(src, 1e-30))


def check_watertight(coverage_T: list[float], extent_T: list[float], cfg: QualityConfig) -> None:
    """Raise ``watertight_lost_geometry`` when a frame's watertight mesh misses its source."""
    if not cfg.enabled:
        return
    cov, ext = np.asarray(coverage_T), np.asarray(extent_T)
    bad = np.flatnonzero((cov < cfg.min_coverage) | (ext < cfg.min_extent_ratio))
    if len(bad):
        t = int(bad[np.argmin(cov[bad])])
        raise AssetError("quality", "watertight_lost_geometry",
                         f"frames {bad.tolist()[:8]}: frame {t} covers {cov[t]:.1%} of the source's outer surface "
                         f"(quality.min_coverage={cfg.min_coverage:g}) at {ext[t]:.2f}x its extent "
                         f"(quality.min_extent_ratio={cfg.min_extent_ratio:g})")
