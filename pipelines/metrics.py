"""Geometry metrics between a predicted and a ground-truth mesh sequence: the evaluation protocol.

Inputs are triangle meshes (vertices [V,3], faces [F,3]) of one clip, prediction and ground
truth, BOTH IN THE CLIP'S NORMALISED FRAME ([-1,1]^3, the transform of the shard's
`normalization` column; docs/design.md "Data contract"), so every distance below is in those units (the
cube is 2 wide). The ground truth is the watertight mesh of each frame; occupancy (IoU) assumes
both meshes are closed, as marching-cubes output and the watertight stage's meshes are.

Surface samples. `n` points uniformly by area: a face by the inverse CDF of its area share at
one uniform number, a point uniformly in it. EVERY mesh is sampled from the same seed (common
random numbers), so a mesh and a copy of it give identical samples (a perfect prediction scores
exactly CD 0, F 1), and a mesh and a similarity transform of it give transformed samples.

Chamfer distance (unsquared, summed over the two directions):
    CD(X, Y) = mean_{p in P} min_{q in Q} |p - q|  +  mean_{q in Q} min_{p in P} |q - p|
with P, Q the n samples on X (prediction) and Y (ground truth), |.| the Euclidean norm. Two
concentric spheres of radii 1 and 1.1 give 0.1 + 0.1 = 0.2. Between two independent samplings of
one surface of area A the nearest sample is ~0.5 sqrt(A/n) away, so CD has a floor of about
sqrt(A/n) when the meshes differ at all (~0.01 for a sphere of radius 0.9 at n = 100,000).

F-score at tau (default 0.02 = 1% of the cube): precision = share of P with min_q |p - q| < tau,
recall = share of Q with min_p |q - p| < tau, F = 2 precision recall / (precision + recall)
(0 when both are 0).

Volume IoU = |inside X and inside Y| / |inside X or inside Y|, the inside test by ray parity
(open3d RaycastingScene.compute_occupancy, a majority of `occupancy_rays` rays):
- `iou`: on `num_uniform` points uniform in the union of the two meshes' bounding boxes (padded
  by 1% of its diagonal): an unbiased estimate of the volumetric IoU (the box only sets the
  variance). Two concentric spheres of radii r1 < r2 give (r1/r2)^3.
- `iou_near`: on `num_near` points near the surfaces (half on each: surface samples plus
  isotropic Gaussian noise of `near_sigma`): how well the boundary agrees, much stricter.

Similarity alignment. One similarity S(x) = s R x + t is fitted mapping the predicted FRAME 1
onto the ground-truth frame 1 and applied to every frame; each metric is reported raw and
`_aligned`. Fit: symmetric ICP with scale (correspondences in both directions, so the scale
cannot collapse; Umeyama's closed form each step) on `align_points` samples, started from
48 rotations (the 24 rotations of the cube group about the centroids, and the 24 that map
the predicted principal axes onto the ground-truth ones in every order and sign) with the
RMS-radius scale, each run coarse on 500 points; the best 2 are refined, the lowest CD wins.

Temporal consistency (needs T >= 2), from the step Chamfer distances of consecutive frames
(the CD above on the first `temporal_points` samples of each frame):
- jitter = mean_t |CD(pred_t, pred_t+1) - CD(gt_t, gt_t+1)| (and `jitter_aligned`, on the
  aligned prediction): 0 when the prediction moves exactly like the ground truth (a static
  prediction of a moving shape scores the ground truth's mean step; a flickering one scores
  more). Shape error leaks in too (a fatter shape moving the same way takes slightly larger
  steps), so compare it between methods rather than with 0;
- alignment spread: each frame t is aligned on its own (ICP from the global S), giving
  (s_t, R_t, t_t); reported are the standard deviation of log s_t, the RMS angle in degrees of
  R_t against their chordal mean rotation, and the RMS distance of t_t from their mean. Zero
  for a prediction that is one similarity away from the ground truth in every frame.

F-score floor: a sample finds no partner within tau in another sampling of the same surface
(area A) with probability ~ exp(-n pi tau^2 / A): below 1% at tau 0.02 and n = 100,000 for any
A < 27 (a normalised shape's area rarely exceeds the cube's 24), so keep n at 100,000 for tau 0.02.

A prediction frame without area (no faces) scores CD = inf, F = 0 and IoU = 0.

Cost (one core): ~4 CPU-s per frame at the defaults against 256^3 watertight ground truth
(~200k faces): ~1 CPU-minute per 16-frame clip, most of it the occupancy rays and the KD-tree
queries (which slow down as the prediction gets worse).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from pipelines.sdf import morton_order

Mesh = tuple[np.ndarray, np.ndarray]  # (vertices [V,3], faces [F,3])


@dataclass
class MetricConfig:
    num_points: int = 100_000  # surface samples per mesh for CD / F-score
    fscore_tau: float = 0.02
    num_uniform: int = 100_000  # IoU points uniform in the union bounding box
    num_near: int = 100_000  # IoU points near the two surfaces (half each)
    near_sigma: float = 0.01
    occupancy_rays: int = 3  # odd: majority vote of the ray-parity inside test
    align: bool = True  # also report the `_aligned` metrics and the alignment spread
    align_points: int = 5000
    align_iterations: int = 40
    # Step CDs (consecutive frames) use the first `temporal_points` samples of each frame: the
    # exact nearest-neighbour search costs ~ n^2 (step / spacing)^2 for a step much larger than
    # the sample spacing, and prediction and truth are measured at the same n, so they compare.
    temporal_points: int = 20_000
    seed: int = 0
    workers: int = 1  # threads of each KD-tree query (-1 = all cores)


# ------------------------------------------------------------------------------ similarity


@dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation."""

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    def inverse(self) -> Similarity:
        rt = self.rotation.T
        return Similarity(1.0 / self.scale, rt, -(rt @ self.translation) / self.scale)

    def compose(self, first: Similarity) -> Similarity:
        """self after `first`."""
        return Similarity(self.scale * first.scale, self.rotation @ first.rotation,
                          self.scale * self.rotation @ first.translation + self.translation)

    @property
    def rotation_deg(self) -> float:
        return rotation_angle_deg(self.rotation)

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.rotation.tolist(),
                "translation": self.translation.tolist(), "rotation_deg": self.rotation_deg}


def rotation_angle_deg(r: np.ndarray) -> float:
    """The angle of a rotation matrix, in degrees."""
    return math.degrees(float(Rotation.from_matrix(r).magnitude()))  # accurate near 0, unlike acos of the trace


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Similarity:
    """Least-squares similarity S minimising sum |S(src_i) - dst_i|^2 (Umeyama 1991), det R = +1."""
    scale, rot, trans = _umeyama_batch(np.asarray(src, np.float64)[None], np.asarray(dst, np.float64)[None], with_scale)
    return Similarity(float(scale[0]), rot[0], trans[0])


def _umeyama_batch(src: np.ndarray, dst: np.ndarray, with_scale: bool = True):
    """Umeyama for K problems at once: src, dst [K,N,3] -> scale [K], rotation [K,3,3], translation [K,3]."""
    mu_s, mu_d = src.mean(1), dst.mean(1)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = np.einsum("kni,knj->kij", xd, xs) / src.shape[1]
    u, d, vt = np.linalg.svd(cov)
    e = np.ones((len(src), 3))
    e[np.linalg.det(u) * np.linalg.det(vt) < 0, 2] = -1
    rot = u @ (e[:, :, None] * vt)
    var_s = (xs**2).sum((1, 2)) / src.shape[1]
    if with_scale:
        scale = np.where(var_s > 0, (d * e).sum(1) / np.where(var_s > 0, var_s, 1.0), 1.0)
    else:
        scale = np.ones(len(src))
    return scale, rot, mu_d - scale[:, None] * np.einsum("kij,kj->ki", rot, mu_s)


def _cube_rotations() -> list[np.ndarray]:
    """The 24 proper rotations of the cube (signed permutation matrices with det +1)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return out


_CUBE = _cube_rotations()


def _principal_axes(x: np.ndarray) -> np.ndarray:
    """Columns = principal axes of the points (largest variance first), det +1."""
    w, v = np.linalg.eigh(np.cov((x - x.mean(0)).T))
    v = v[:, ::-1]
    if np.linalg.det(v) < 0:
        v[:, 2] *= -1
    return v


def _icp(p: np.ndarray, g: np.ndarray, tree_p: cKDTree, tree_g: cKDTree, inits: list[Similarity],
         iterations: int, tol: float = 1e-6) -> list[tuple[float, Similarity]]:
    """Symmetric ICP with scale from each of `inits`, all at once; (CD in g's units, S) per init.

    Both trees stay fixed: the reverse correspondences come from querying p's tree with
    S^-1(g) (a similarity keeps nearest neighbours), so nothing is rebuilt per iteration. A run
    stops when its CD no longer falls by `tol` (relative); its best iterate is returned."""
    k, n, m = len(inits), len(p), len(g)
    sc = np.array([s.scale for s in inits], np.float64)
    rot = np.stack([s.rotation for s in inits]).astype(np.float64)
    tr = np.stack([s.translation for s in inits]).astype(np.float64)
    best_cd = np.full(k, np.inf)
    best = (sc.copy(), rot.copy(), tr.copy())
    active = np.ones(k, bool)
    for _ in range(iterations + 1):
        idx = np.flatnonzero(active)
        fwd = sc[idx, None, None] * np.einsum("kij,nj->kni", rot[idx], p) + tr[idx, None]
        bwd = np.einsum("kji,knj->kni", rot[idx], g[None] - tr[idx, None]) / sc[idx, None, None]
        d_fwd, j_fwd = tree_g.query(fwd.reshape(-1, 3))
        d_bwd, j_bwd = tree_p.query(bwd.reshape(-1, 3))
        d_fwd, j_fwd = d_fwd.reshape(len(idx), n), j_fwd.reshape(len(idx), n)
        d_bwd, j_bwd = d_bwd.reshape(len(idx), m), j_bwd.reshape(len(idx), m)
        cd = d_fwd.mean(1) + sc[idx] * d_bwd.mean(1)
        improved = cd < best_cd[idx] * (1 - tol)
        better = cd < best_cd[idx]
        for arr, src in zip(best, (sc, rot, tr)):
            arr[idx[better]] = src[idx[better]]
        best_cd[idx[better]] = cd[better]
        active[idx[~improved]] = False
        idx, j_fwd, j_bwd = idx[improved], j_fwd[improved], j_bwd[improved]
        if not len(idx):
            break
        src = np.concatenate([np.broadcast_to(p, (len(idx), n, 3)), p[j_bwd]], 1)
        dst = np.concatenate([g[j_fwd], np.broadcast_to(g, (len(idx), m, 3))], 1)
        sc[idx], rot[idx], tr[idx] = _umeyama_batch(src, dst)
    return [(float(best_cd[i]), Similarity(float(best[0][i]), best[1][i], best[2][i])) for i in range(k)]


def align_similarity(pred: Mesh, gt: Mesh, num_points: int = 5000, iterations: int = 40, seed: int = 0,
                     init: Similarity | None = None) -> Similarity:
    """The similarity mapping the predicted mesh onto the ground truth (see the module doc).

    With `init`, ICP is run from it alone (no restarts): the per-frame refinement."""
    p = sample_points(*pred, num_points, seed)
    g = sample_points(*gt, num_points, seed)
    if p is None or g is None:
        return init or Similarity()
    tree_p, tree_g = cKDTree(p), cKDTree(g)
    if init is not None:
        return _icp(p, g, tree_p, tree_g, [init], iterations)[0][1]
    cp, cg = p.mean(0), g.mean(0)
    rp = math.sqrt(((p - cp) ** 2).sum(1).mean())
    rg = math.sqrt(((g - cg) ** 2).sum(1).mean())
    s0 = rg / rp if rp > 0 else 1.0
    ep, eg = _principal_axes(p), _principal_axes(g)
    starts = [c for c in _CUBE] + [eg @ c @ ep.T for c in _CUBE]
    coarse = min(500, num_points)
    pc, gc = p[:coarse], g[:coarse]  # samples are i.i.d.: a prefix is a smaller sample
    tree_pc, tree_gc = cKDTree(pc), cKDTree(gc)
    runs = _icp(pc, gc, tree_pc, tree_gc, [Similarity(s0, r, cg - s0 * r @ cp) for r in starts], 10)
    runs.sort(key=lambda x: x[0])
    return min(_icp(p, g, tree_p, tree_g, [s for _, s in runs[:2]], iterations), key=lambda x: x[0])[1]


# ------------------------------------------------------------------------------ sampling


def sample_points(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray | None:
    """n points [n,3] uniformly by area from default_rng(seed); None for a mesh without area."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        return None
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cdf = np.cumsum(area)
    total = cdf[-1]
    if not np.isfinite(total) or total <= 0:
        return None
    rng = np.random.default_rng(seed)
    face = np.minimum(np.searchsorted(cdf, rng.random(n) * total, side="right"), len(f) - 1)
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    t = tri[face]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])


def nn_tree(points: np.ndarray) -> cKDTree:
    """Exact nearest-neighbour tree. Sliding-midpoint splits (balanced_tree=False) instead of
    medians: the same answers, 2-3x faster for the far queries a poor prediction makes (measured:
    2.4 -> 1.0 s for 100k queries at mean distance 0.5), and quicker to build."""
    return cKDTree(points, balanced_tree=False, compact_nodes=False)


def nearest_distances(tree: cKDTree, points: np.ndarray, order: np.ndarray, workers: int = 1) -> np.ndarray:
    """[n] distance of each point to its nearest tree point, queried in `order` (a Morton order:
    consecutive queries then walk the same tree nodes, ~1.3x faster) and returned in input order."""
    out = np.empty(len(points))
    out[order] = tree.query(points[order], workers=workers)[0]
    return out


def frame_chamfers(pred_frames: Sequence[np.ndarray | None], clips: Sequence[Sequence[tuple[np.ndarray, cKDTree]]],
                   workers: int = 1) -> np.ndarray:
    """[len(clips)] the Chamfer distance (sum of the two directional mean nearest distances) of
    each predicted frame's samples to each clip's samples of the SAME frame index, averaged over
    frames. `clips`: per clip, per frame (samples, nn_tree(samples)), or (None, None). Empty
    frames (None) on either side are left out; NaN where no frame pair is left."""
    out = np.full(len(clips), math.nan)
    pred = [(p, nn_tree(p)) for p in pred_frames if p is not None]
    kept = [t for t, p in enumerate(pred_frames) if p is not None]
    for j, clip in enumerate(clips):
        cds = []
        for (p, p_tree), t in zip(pred, kept):
            if t >= len(clip):
                break
            g, g_tree = clip[t]
            if g is None:
                continue
            cds.append(g_tree.query(p, workers=workers)[0].mean() + p_tree.query(g, workers=workers)[0].mean())
        if cds:
            out[j] = float(np.mean(cds))
    return out


class _Surface:
    """One mesh with its samples, KD-tree and ray-casting scene, built once and reused."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, cfg: MetricConfig):
        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64).reshape(-1, 3)
        self.points = sample_points(self.vertices, self.faces, cfg.num_points, cfg.seed)
        self.empty = self.points is None
        self._tree = self._scene = self._order = None
        self._rays = cfg.occupancy_rays
        self.workers = cfg.workers

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = nn_tree(self.points)
        return self._tree

    def nearest(self, other: "_Surface") -> np.ndarray:
        """Distance from each of `other`'s samples to the nearest of these samples."""
        return nearest_distances(self.tree, other.points, other.order, self.workers)

    @property
    def order(self) -> np.ndarray:
        if self._order is None:
            self._order = morton_order(self.points)
        return self._order

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        if self.empty:
            return np.zeros(len(points), bool)
        import open3d as o3d

        if self._scene is None:
            self._scene = o3d.t.geometry.RaycastingScene()
            self._scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(self.vertices, np.float32)),
                                      o3d.core.Tensor(np.ascontiguousarray(self.faces, np.uint32)))
        q = o3d.core.Tensor(np.ascontiguousarray(points, np.float32))
        return self._scene.compute_occupancy(q, nsamples=self._rays).numpy() > 0.5

    def bounds(self) -> np.ndarray:
        used = self.vertices[np.unique(self.faces)]
        return np.stack([used.min(0), used.max(0)])


# ------------------------------------------------------------------------------ metrics


def _distances(a: _Surface, b: _Surface) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-sample distances a -> b and b -> a."""
    return b.nearest(a), a.nearest(b)


def _cd_f(a: _Surface, b: _Surface, tau: float) -> dict:
    if a.empty or b.empty:
        return {"chamfer": math.inf, "fscore": 0.0, "precision": 0.0, "recall": 0.0}
    d_ab, d_ba = _distances(a, b)
    precision, recall = float((d_ab < tau).mean()), float((d_ba < tau).mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"chamfer": float(d_ab.mean() + d_ba.mean()), "fscore": f, "precision": precision, "recall": recall}


def _iou(pred: _Surface, gt: _Surface, cfg: MetricConfig) -> dict:
    if gt.empty:
        return {"iou": math.nan, "iou_near": math.nan}
    if pred.empty:
        return {"iou": 0.0, "iou_near": 0.0}
    box = np.concatenate([pred.bounds(), gt.bounds()])
    lo, hi = box.min(0), box.max(0)
    pad = 0.01 * np.linalg.norm(hi - lo)
    rng = np.random.default_rng([cfg.seed, 1])
    uniform = rng.uniform(lo - pad, hi + pad, size=(cfg.num_uniform, 3))
    half = cfg.num_near // 2
    near = np.concatenate([
        pred.points[np.arange(half) % len(pred.points)], gt.points[np.arange(cfg.num_near - half) % len(gt.points)],
    ]) + rng.normal(scale=cfg.near_sigma, size=(cfg.num_near, 3))
    out = {}
    for key, pts in (("iou", uniform), ("iou_near", near)):
        a, b = pred.occupancy(pts), gt.occupancy(pts)
        union = int(np.count_nonzero(a | b))
        out[key] = float(np.count_nonzero(a & b) / union) if union else math.nan
    return out


def chamfer_fscore(pred: Mesh, gt: Mesh, num_points: int = 100_000, tau: float = 0.02, seed: int = 0) -> dict:
    """{"chamfer", "fscore", "precision", "recall"} of one predicted mesh against the ground truth."""
    cfg = MetricConfig(num_points=num_points, fscore_tau=tau, seed=seed)
    return _cd_f(_Surface(*pred, cfg), _Surface(*gt, cfg), tau)


def chamfer_distance(pred: Mesh, gt: Mesh, num_points: int = 100_000, seed: int = 0) -> float:
    """CD = mean_p min_q |p - q| + mean_q min_p |q - p| (unsquared; see the module doc)."""
    return chamfer_fscore(pred, gt, num_points, seed=seed)["chamfer"]


def fscore(pred: Mesh, gt: Mesh, tau: float = 0.02, num_points: int = 100_000, seed: int = 0) -> float:
    return chamfer_fscore(pred, gt, num_points, tau, seed)["fscore"]


def volume_iou(pred: Mesh, gt: Mesh, num_uniform: int = 100_000, num_near: int = 100_000, near_sigma: float = 0.01,
               seed: int = 0, occupancy_rays: int = 3) -> dict:
    """{"iou" (uniform points), "iou_near" (near-surface points)} of two closed meshes."""
    cfg = MetricConfig(num_points=max(num_near // 2, 1), num_uniform=num_uniform, num_near=num_near,
                       near_sigma=near_sigma, seed=seed, occupancy_rays=occupancy_rays)
    return _iou(_Surface(*pred, cfg), _Surface(*gt, cfg), cfg)


def frame_metrics(pred: Mesh, gt: Mesh, cfg: MetricConfig | None = None) -> dict:
    """CD, F-score (with precision/recall) and both IoUs of one frame, no alignment."""
    cfg = cfg or MetricConfig()
    p, g = _Surface(*pred, cfg), _Surface(*gt, cfg)
    return {**_cd_f(p, g, cfg.fscore_tau), **_iou(p, g, cfg)}


def _alignment_spread(transforms: list[Similarity]) -> dict:
    scales = np.array([s.scale for s in transforms])
    rots = Rotation.from_matrix(np.stack([s.rotation for s in transforms]))
    mean_rot = rots.mean()
    angles = np.degrees((rots * mean_rot.inv()).magnitude())
    trans = np.stack([s.translation for s in transforms])
    return {
        "align_scale_std": float(np.std(np.log(scales))),
        "align_rotation_std_deg": float(np.sqrt(np.mean(angles**2))),
        "align_translation_std": float(np.sqrt(((trans - trans.mean(0)) ** 2).sum(1).mean())),
    }


def _step_chamfer(frames: list[_Surface], n: int) -> list[float]:
    """CD between consecutive frames on the first n samples of each (inf next to an empty frame)."""
    out = []
    for a, b in zip(frames[:-1], frames[1:]):
        if a.empty or b.empty:
            out.append(math.inf)
            continue
        pa, pb = a.points[:n], b.points[:n]
        out.append(float(nearest_distances(nn_tree(pb), pa, morton_order(pa), a.workers).mean() +
                         nearest_distances(nn_tree(pa), pb, morton_order(pb), a.workers).mean()))
    return out


def _jitter(pred_steps: list[float], gt_steps: list[float]) -> float:
    return float(np.mean(np.abs(np.asarray(pred_steps) - np.asarray(gt_steps)))) if gt_steps else math.nan


def evaluate_clip(pred_frames: Sequence[Mesh], gt_frames: Sequence[Mesh], cfg: MetricConfig | None = None) -> dict:
    """Every metric of one clip (T predicted meshes against T ground-truth meshes, same frame times).

    Returns {"per_frame": {metric: [T values]}, "summary": {metric: mean over frames, jitter,
    alignment spread}, "alignment": S.to_dict(), "temporal": {...step CDs and per-frame
    transforms}}; every value is a float or a list (JSON-ready). Keys with `_aligned` are computed
    after the one clip-level similarity (absent with cfg.align False)."""
    cfg = cfg or MetricConfig()
    if len(pred_frames) != len(gt_frames) or not gt_frames:
        raise ValueError(f"need the same number (>= 1) of predicted and ground-truth frames, got {len(pred_frames)} and {len(gt_frames)}")
    gts = [_Surface(*m, cfg) for m in gt_frames]
    preds = [_Surface(*m, cfg) for m in pred_frames]
    variants = {"": preds}
    out: dict = {"num_frames": len(gts)}
    if cfg.align:
        sim = align_similarity(pred_frames[0], gt_frames[0], cfg.align_points, cfg.align_iterations, cfg.seed)
        variants["_aligned"] = [_Surface(sim.apply(p.vertices), p.faces, cfg) for p in preds]
        out["alignment"] = sim.to_dict()

    per_frame: dict[str, list[float]] = {}
    for suffix, frames in variants.items():
        for p, g in zip(frames, gts):
            m = {**_cd_f(p, g, cfg.fscore_tau), **_iou(p, g, cfg)}
            for k, v in m.items():
                per_frame.setdefault(k + suffix, []).append(v)
    summary = {k: float(np.mean(v)) for k, v in per_frame.items()}

    temporal: dict = {}
    if len(gts) > 1:
        gt_steps = _step_chamfer(gts, cfg.temporal_points)
        temporal["gt_step_chamfer"] = gt_steps
        for suffix, frames in variants.items():
            steps = _step_chamfer(frames, cfg.temporal_points)
            temporal["pred_step_chamfer" + suffix] = steps
            summary["jitter" + suffix] = _jitter(steps, gt_steps)
        if cfg.align:
            per = [align_similarity(pm, gm, cfg.align_points, cfg.align_iterations, cfg.seed, init=sim)
                   for pm, gm in zip(pred_frames, gt_frames)]
            temporal["per_frame_alignment"] = [s.to_dict() for s in per]
            summary.update(_alignment_spread(per))
    out.update(per_frame=per_frame, summary=summary, temporal=temporal)
    return out
