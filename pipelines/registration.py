"""Pose registration of a generated mesh sequence to its input video (the paper's post-processing).

The model generates every frame in the object's canonical [-1,1]^3 frame; the video shows the
object from some camera, at some scale and place. Registration finds one similarity transform
(scale s, rotation R, translation t) that takes canonical points into the camera frame of an
assumed pinhole camera (field of view `yfov_deg`, principal point at the image centre), so that
the meshes' silhouettes match the video's object masks:

1. first frame, multi-start: `view_directions` directions on a Fibonacci sphere x `rolls`
   in-plane angles, plus the canonical front view; each start gets its scale and image-plane
   shift from the mask's area and centroid (moment matching, twice), then the best
   `refine_starts` are refined by a pattern search over (rotation vector, log s, tx, ty)
   maximising the silhouette IoU;
2. global: a silhouette can fit one frame in several poses (a strip seen from either side, a
   tube from either end) of which only one explains the motion, so the first-frame fits are
   scored on the mean IoU over up to `sequence_frames` frames spread over the sequence and the
   best `sequence_starts` are refined on it; the best of those wins.

Meshes are scored through a coarse copy (vertices clustered on a grid of `coarse_cells` per
side of their bounding box, a fraction of a comparison pixel): a silhouette at 128 px does not
need a million marching-cubes faces.

Depth and scale are not separable from a silhouette under a narrow lens, so the depth of the
object's centre stays at the distance that frames [-1,1]^3 (`pipelines.render.fit_distance`) and
the scale absorbs the rest. Silhouettes are compared at `resolution` px (longer side) with
`pipelines.raster`. Conventions: OpenCV camera frame, as pipelines.render.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines import raster
from pipelines.render import fit_distance


@dataclass
class RegistrationConfig:
    yfov_deg: float = 40.0  # the assumed camera's vertical field of view (the dataset's render.yfov_deg)
    resolution: int = 128  # silhouettes are compared at this many pixels along the longer side
    view_directions: int = 48  # multi-start: directions on a sphere ...
    rolls: int = 4  # ... times in-plane rotations
    refine_starts: int = 6  # the best starts refined on the first frame
    iterations: int = 300  # silhouette evaluations per refinement (at most)
    sequence_frames: int = 6  # frames of the global refinement (evenly spread; 0 = first frame only)
    sequence_starts: int = 2  # first-frame fits refined on the sequence
    sequence_iterations: int = 150
    coarse_cells: int = 128  # vertex-clustering grid of the scoring copies (per side of the bounding box; 0 = off)


@dataclass
class Registration:
    scale: float
    rotation: np.ndarray  # [3,3] canonical -> camera
    translation: np.ndarray  # [3]
    intrinsics: np.ndarray  # [3,3] K of the input frames' resolution
    iou_before: float  # first frame, canonical pose in front of the camera (no registration)
    iou_first: float  # first frame after the first-frame fit
    iou_sequence: float  # mean over the refinement's frames after the global refinement

    def apply(self, vertices: np.ndarray) -> np.ndarray:
        """Canonical vertices [V,3] -> camera-frame vertices [V,3] (float32)."""
        return (self.scale * np.asarray(vertices, np.float64) @ self.rotation.T + self.translation).astype(np.float32)

    def extrinsics(self) -> np.ndarray:
        """[4,4] canonical-to-camera similarity (OpenCV axes), scale folded into the rotation block."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def front_view(H: int, W: int, cfg: "RegistrationConfig", iou: float = float("nan")) -> Registration:
    """The unregistered placement: canonical [-1,1]^3 seen from the front (+z), framed like
    pipelines.render frames it, at unit scale."""
    t = np.array([0.0, 0.0, fit_distance(0.0, 0.0, cfg.yfov_deg, 0.95)])
    return Registration(1.0, FRONT, t, pinhole(H, W, cfg.yfov_deg), iou, iou, iou)


def pinhole(H: int, W: int, yfov_deg: float) -> np.ndarray:
    """K of a camera with vertical field of view yfov_deg and the principal point at the centre."""
    f = H / 2 / np.tan(np.deg2rad(yfov_deg) / 2)
    return np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])


def masks_of(frames_THW4: np.ndarray) -> np.ndarray:
    """Object masks [T,H,W] bool from the frames' alpha."""
    return np.asarray(frames_THW4)[..., 3] > 127


# canonical frame (glTF: y up, the viewer on +z) -> OpenCV camera looking at it from the front
FRONT = np.diag([1.0, -1.0, -1.0])


def look_rotation(direction: np.ndarray, roll: float) -> np.ndarray:
    """R (canonical -> camera) of a camera on the canonical-space `direction` from the object,
    looking at it with canonical +y up on screen, then rolled by `roll` radians about its axis."""
    fwd = -np.asarray(direction, np.float64) / np.linalg.norm(direction)
    up = np.array([0.0, 1.0, 0.0]) if abs(fwd[1]) < 0.99 else np.array([0.0, 0.0, 1.0])
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.stack([right, down, fwd])


def fibonacci_sphere(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = np.pi * (1 + 5**0.5) * k
    return np.stack([np.sin(polar) * np.cos(azimuth), np.cos(polar), np.sin(polar) * np.sin(azimuth)], 1)


def rotvec_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrix of the rotation vector w (axis * angle)."""
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


class _Scorer:
    """Silhouette IoU of posed meshes against masks, at the comparison resolution."""

    def __init__(self, meshes: list[tuple[np.ndarray, np.ndarray]], masks: np.ndarray, cfg: RegistrationConfig):
        H, W = masks.shape[1:]
        r = cfg.resolution / max(H, W)
        self.h, self.w = max(int(round(H * r)), 1), max(int(round(W * r)), 1)
        self.K = pinhole(self.h, self.w, cfg.yfov_deg)
        self.meshes = [coarse(v, f, cfg.coarse_cells) for v, f in meshes]
        self.masks = np.stack([_resize_mask(m, self.h, self.w) for m in masks])

    def silhouette(self, k: int, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
        v, f = self.meshes[k]
        if len(f) == 0:
            return np.zeros((self.h, self.w), bool)
        return raster.silhouette(s * v @ R.T + t, f, self.K, self.h, self.w)

    def iou(self, frames: list[int], s: float, R: np.ndarray, t: np.ndarray) -> float:
        return float(np.mean([raster.iou(self.silhouette(k, s, R, t), self.masks[k]) for k in frames]))


def coarse(vertices: np.ndarray, faces: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: vertices merged per cell of a `cells`^3 grid over the bounding box (at
    their mean), faces that collapse dropped. The outline moves by at most one cell."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0 or cells <= 0:
        return v, f
    lo, hi = v.min(0), v.max(0)
    key = np.floor((v - lo) / max(float((hi - lo).max()), 1e-12) * (cells - 1e-9)).astype(np.int64)
    _, cluster, counts = np.unique(key[:, 0] * cells * cells + key[:, 1] * cells + key[:, 2], return_inverse=True,
                                   return_counts=True)
    cv = np.stack([np.bincount(cluster, v[:, k]) for k in range(3)], 1) / counts[:, None]
    cf = cluster.reshape(-1)[f]
    keep = (cf[:, 0] != cf[:, 1]) & (cf[:, 1] != cf[:, 2]) & (cf[:, 0] != cf[:, 2])
    return cv, cf[keep]


def _resize_mask(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if mask.shape == (h, w):
        return mask.copy()
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BOX)) > 127


def _moment_match(sc: _Scorer, s: float, R: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    """Scale and image-plane shift that give the first frame's silhouette the mask's area and centroid."""
    target = sc.masks[0]
    if not target.any():
        return s, t
    t = t.copy()
    f = sc.K[0, 0]
    for _ in range(2):
        sil = sc.silhouette(0, s, R, t)
        if not sil.any():
            break
        s *= float(np.sqrt(target.sum() / sil.sum()))
        ys, xs = np.nonzero(sil)
        ym, xm = np.nonzero(target)
        t[0] += (xm.mean() - xs.mean()) * t[2] / f
        t[1] += (ym.mean() - ys.mean()) * t[2] / f
    return s, t


def _pattern_search(score, x: np.ndarray, steps: np.ndarray, budget: int) -> tuple[np.ndarray, float]:
    """Maximise score(x) by compass search: try +-step on each coordinate, keep improvements,
    halve the steps after a sweep without one. Deterministic; `budget` evaluations at most."""
    best = score(x)
    used = 1
    while used < budget and steps.max() > 1e-4:
        improved = False
        for i in range(len(x)):
            for sign in (1.0, -1.0):
                if used >= budget:
                    break
                y = x.copy()
                y[i] += sign * steps[i]
                v = score(y)
                used += 1
                if v > best:
                    x, best, improved = y, v, True
                    break
        if not improved:
            steps = steps / 2
    return x, best


def register(meshes: list[tuple[np.ndarray, np.ndarray]], masks_THW: np.ndarray,
             cfg: RegistrationConfig | None = None) -> Registration:
    """One similarity transform for the whole sequence (see the module doc).

    meshes: T canonical (vertices [V,3], faces [F,3]); masks_THW: bool object masks of the T input
    frames (e.g. masks_of(frames)). An empty first mesh or mask leaves the canonical front pose."""
    cfg = cfg or RegistrationConfig()
    masks_THW = np.asarray(masks_THW, bool)
    if len(meshes) != len(masks_THW):
        raise ValueError(f"{len(meshes)} meshes for {len(masks_THW)} masks")
    sc = _Scorer([(np.asarray(v, np.float64), np.asarray(f, np.int64)) for v, f in meshes], masks_THW, cfg)
    H, W = masks_THW.shape[1:]
    front = front_view(H, W, cfg)
    t0 = front.translation
    before = sc.iou([0], 1.0, FRONT, t0)
    if len(meshes[0][1]) == 0 or not masks_THW[0].any():
        return front_view(H, W, cfg, before)

    rotations = [FRONT] + [look_rotation(d, 2 * np.pi * k / cfg.rolls)
                           for d in fibonacci_sphere(cfg.view_directions) for k in range(cfg.rolls)]
    starts = []
    for R in rotations:
        s, t = _moment_match(sc, 1.0, R, t0)
        starts.append((sc.iou([0], s, R, t), s, R, t))
    starts.sort(key=lambda x: -x[0])

    def fit(frames: list[int], s: float, R: np.ndarray, t: np.ndarray, steps: np.ndarray, budget: int):
        def unpack(x):
            return s * np.exp(x[3]), rotvec_matrix(x[:3]) @ R, t + np.array([x[4], x[5], 0.0]) * t[2]

        score = lambda x: sc.iou(frames, *unpack(x))  # noqa: E731
        x, best = _pattern_search(score, np.zeros(6), steps, budget // 2)
        # restart from there with large steps again: compass search stalls on silhouette plateaus
        x, best = _pattern_search(score, x, steps / 2, budget // 2)
        return (best, *unpack(x))

    first_steps = np.array([0.3, 0.3, 0.3, 0.1, 0.03, 0.03])
    fits = [fit([0], s, R, t, first_steps, cfg.iterations) for _, s, R, t in starts[: cfg.refine_starts]]
    frames = sorted({int(round(k)) for k in np.linspace(0, len(meshes) - 1, cfg.sequence_frames)}) if cfg.sequence_frames else [0]
    fits.sort(key=lambda x: -sc.iou(frames, *x[1:]))
    refined = [(fit(frames, s, R, t, first_steps / 4, cfg.sequence_iterations), first)
               for first, s, R, t in fits[: max(cfg.sequence_starts, 1)]]
    (iou_seq, s, R, t), iou_first = max(refined, key=lambda x: x[0][0])
    return Registration(float(s), R, t, pinhole(H, W, cfg.yfov_deg), float(before), float(iou_first), float(iou_seq))


def posed_iou(meshes: list[tuple[np.ndarray, np.ndarray]], masks_THW: np.ndarray, extrinsics: np.ndarray,
              K: np.ndarray) -> float:
    """Mean over frames of the silhouette IoU of canonical meshes moved into a camera by a [4,4]
    canonical-to-camera transform (scale in its rotation block) and seen through K."""
    A, b = np.asarray(extrinsics, np.float64)[:3, :3], np.asarray(extrinsics, np.float64)[:3, 3]
    return float(silhouette_ious([(np.asarray(v, np.float64) @ A.T + b, f) for v, f in meshes], masks_THW, K).mean())


def silhouette_ious(meshes_cam: list[tuple[np.ndarray, np.ndarray]], masks_THW: np.ndarray, K: np.ndarray) -> np.ndarray:
    """[T] IoU of each camera-frame mesh's silhouette (through K) with its mask, at full resolution."""
    H, W = np.asarray(masks_THW).shape[1:]
    out = []
    for (v, f), m in zip(meshes_cam, masks_THW):
        sil = raster.silhouette(v, f, K, H, W) if len(f) else np.zeros((H, W), bool)
        out.append(raster.iou(sil, np.asarray(m, bool)))
    return np.asarray(out)
