"""Evaluation metrics on analytic shapes whose values are known in closed form.

Spheres: concentric radii 1 and 1.1 give CD 0.1 + 0.1 = 0.2 and IoU (1/1.1)^3; a unit sphere
and its copy shifted by d <= 1 give CD = d exactly in the continuum (the distance from a point
at polar coordinate u = cos(theta) to the shifted sphere is |sqrt(1 + d^2 + 2 d u) - 1|, u is
uniform on [-1, 1] by Archimedes' theorem, and its mean is d / 2). Different tessellations are
used for the two meshes wherever the samples must not correspond one-to-one.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from pipelines import metrics, shapes
from pipelines.metrics import MetricConfig, Similarity


def _sphere(radius: float, subdivisions: int, center=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(m.vertices) + center, np.asarray(m.faces)


def _asymmetric(fine: bool) -> tuple[np.ndarray, np.ndarray]:
    """A flat box with a ball on one corner and a tilted rod: no rotational symmetry."""
    d = 2 if fine else 1
    box = shapes.box_grid((1.6, 0.8, 0.4), (8 * d, 4 * d, 2 * d))
    ball = shapes.uv_sphere(0.3, 8 * d, 12 * d)
    rod = shapes.capped_cylinder(0.12, 0.7, 8 * d, 3 * d)
    tilt = Rotation.from_euler("z", -70, degrees=True).as_matrix()
    parts = [box, (ball[0] + [0.6, 0.45, 0.1], ball[1]), (rod[0] @ tilt.T + [-0.8, 0.2, 0.0], rod[1])]
    verts, faces, offset = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def _similarity(seed: int) -> Similarity:
    rng = np.random.default_rng(seed)
    return Similarity(float(rng.uniform(0.5, 1.5)), Rotation.random(random_state=seed).as_matrix(), rng.uniform(-0.5, 0.5, 3))


UNIT = _sphere(1.0, 5)
UNIT_COARSE = _sphere(1.0, 4)  # same surface, other tessellation
BIG = _sphere(1.1, 4)


# ---------------------------------------------------------------- Chamfer / F-score


def test_chamfer_of_concentric_spheres_is_0_2():
    r = metrics.chamfer_fscore(UNIT, BIG, num_points=40_000)
    # Tessellation (flat faces sit <= 1.3e-3 inside the spheres) and sampling add < 2e-3.
    assert r["chamfer"] == pytest.approx(0.2, abs=2e-3)
    assert metrics.chamfer_distance(BIG, UNIT, num_points=40_000) == pytest.approx(r["chamfer"], rel=0.02)


def test_chamfer_of_a_shifted_sphere_approaches_the_shift():
    # Nearest-SAMPLE distances exceed the point-to-surface ones by the sampling floor, at most
    # about the mean nearest-neighbour spacing 0.5 sqrt(area / n); tessellation takes < 2e-3.
    for shift in (0.1, 0.3):
        moved = _sphere(1.0, 4, center=(shift, 0.0, 0.0))
        excess = [metrics.chamfer_distance(UNIT, moved, num_points=n) - shift for n in (10_000, 40_000)]
        assert -2e-3 < excess[1] < 0.5 * math.sqrt(4 * math.pi / 40_000), (shift, excess)
        assert excess[1] < excess[0], (shift, excess)  # converging to the continuum value as n grows


def test_mesh_against_itself_and_its_retessellation():
    r = metrics.frame_metrics(BIG, BIG, MetricConfig(num_points=10_000, num_uniform=10_000, num_near=10_000))
    assert (r["chamfer"], r["fscore"], r["iou"], r["iou_near"]) == (0.0, 1.0, 1.0, 1.0)
    # Another tessellation of the same sphere: only the sampling floor ~ sqrt(area / n) remains,
    # and a sample misses the other set at tau with probability ~ exp(-n pi tau^2 / area).
    n = 20_000
    floor = math.sqrt(4 * math.pi / n)
    r = metrics.chamfer_fscore(UNIT, UNIT_COARSE, num_points=n, tau=0.05)
    assert 0.5 * floor < r["chamfer"] < 1.5 * floor and r["fscore"] > 0.999
    assert metrics.chamfer_fscore(UNIT, UNIT_COARSE, num_points=n, tau=0.02)["fscore"] < 0.97  # tau near the spacing


def test_fscore_threshold_around_the_sphere_gap():
    # Every point of one sphere is >= 0.1 - 1.3e-3 from every point of the other.
    below = metrics.chamfer_fscore(UNIT, BIG, num_points=20_000, tau=0.095)
    above = metrics.chamfer_fscore(UNIT, BIG, num_points=20_000, tau=0.12)
    assert (below["precision"], below["recall"], below["fscore"]) == (0.0, 0.0, 0.0)
    assert (above["precision"], above["recall"], above["fscore"]) == (1.0, 1.0, 1.0)
    # A prediction that covers only part of the truth: recall drops, precision stays.
    half = _sphere(1.0, 4)
    keep = half[0][half[1]].mean(1)[:, 0] > 0
    part = metrics.chamfer_fscore((half[0], half[1][keep]), UNIT, num_points=20_000, tau=0.05)
    assert part["precision"] > 0.99 and 0.45 < part["recall"] < 0.6
    assert part["fscore"] == pytest.approx(2 * part["precision"] * part["recall"] / (part["precision"] + part["recall"]))


# ---------------------------------------------------------------- IoU


@pytest.mark.parametrize("r1, r2", [(1.0, 1.1), (0.8, 1.0)])
def test_volume_iou_of_concentric_spheres(r1, r2):
    r = metrics.volume_iou(_sphere(r1, 4), _sphere(r2, 5), num_uniform=60_000, num_near=10_000)
    assert r["iou"] == pytest.approx((r1 / r2) ** 3, abs=0.012)
    assert r["iou_near"] < r["iou"]  # near the boundaries the shells disagree far more


def test_volume_iou_of_disjoint_and_identical():
    far = _sphere(0.5, 3, center=(3.0, 0.0, 0.0))
    assert metrics.volume_iou(UNIT, far, num_uniform=20_000, num_near=2_000) == {"iou": 0.0, "iou_near": 0.0}
    assert metrics.volume_iou(BIG, BIG, num_uniform=20_000, num_near=2_000) == {"iou": 1.0, "iou_near": 1.0}


def test_empty_prediction_scores_worst():
    empty = (np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    r = metrics.frame_metrics(empty, UNIT, MetricConfig(num_points=1000, num_uniform=1000, num_near=1000))
    assert r["chamfer"] == math.inf and r["fscore"] == 0.0 and r["iou"] == 0.0 and r["iou_near"] == 0.0


# ---------------------------------------------------------------- alignment


def test_umeyama_is_exact_on_correspondences():
    src = np.random.default_rng(1).normal(size=(50, 3))
    s = _similarity(7)
    est = metrics.umeyama(src, s.apply(src))
    assert est.scale == pytest.approx(s.scale, rel=1e-12)
    np.testing.assert_allclose(est.rotation, s.rotation, atol=1e-12)
    np.testing.assert_allclose(est.translation, s.translation, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_alignment_recovers_a_similarity(seed):
    gt = _asymmetric(fine=False)
    true = _similarity(seed)
    for fine, tol_deg, tol_scale, tol_t in ((False, 1e-6, 1e-9, 1e-9), (True, 0.5, 0.01, 0.005)):
        v, f = _asymmetric(fine)
        pred = (true.apply(v), f)  # the prediction is the truth moved by `true` (and re-tessellated if fine)
        est = metrics.align_similarity(pred, gt, num_points=2000)
        err = est.compose(true)  # identity when est = true^-1
        assert err.rotation_deg < tol_deg and abs(err.scale - 1) < tol_scale and np.linalg.norm(err.translation) < tol_t, (
            fine, err.to_dict())


def test_aligned_metrics_undo_a_global_similarity():
    gt = [_asymmetric(fine=False)]
    true = _similarity(3)
    pred = [(true.apply(gt[0][0]), gt[0][1])]
    r = metrics.evaluate_clip(pred, gt, MetricConfig(num_points=5000, num_uniform=5000, num_near=5000, align_points=2000))
    s = r["summary"]
    assert s["chamfer"] > 0.1 and s["iou"] < 0.7
    assert s["chamfer_aligned"] < 1e-9 and s["fscore_aligned"] == 1.0 and s["iou_aligned"] > 0.999
    assert r["alignment"]["scale"] == pytest.approx(1 / true.scale, rel=1e-9)


# ---------------------------------------------------------------- temporal consistency


def _moving_clip(frames: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    v, f = _asymmetric(fine=False)
    out = []
    for k in range(frames):
        w = v.copy()
        w[:, 1] += 0.08 * k * w[:, 0]  # a shear that grows over time
        out.append((w, f))
    return out


CLIP_CFG = MetricConfig(num_points=4000, num_uniform=4000, num_near=4000, align_points=1000)


def test_temporal_metrics_of_a_perfect_prediction():
    gt = _moving_clip()
    r = metrics.evaluate_clip([(v.copy(), f.copy()) for v, f in gt], gt, CLIP_CFG)
    s = r["summary"]
    assert s["jitter"] == 0.0 and s["jitter_aligned"] < 1e-12
    assert s["align_scale_std"] < 1e-9 and s["align_rotation_std_deg"] < 1e-6 and s["align_translation_std"] < 1e-9
    assert min(r["temporal"]["gt_step_chamfer"]) > 0.01  # the truth does move
    assert len(r["per_frame"]["chamfer"]) == len(r["per_frame"]["iou_aligned"]) == 4
    json.dumps(r)  # plain floats and lists


def test_temporal_metrics_of_static_and_jittered_predictions():
    gt = _moving_clip()
    # A frozen prediction never moves: with shared samples its step CDs are exactly 0, so the
    # jitter is the truth's own mean step.
    frozen = metrics.evaluate_clip([gt[0]] * len(gt), gt, CLIP_CFG)
    assert frozen["temporal"]["pred_step_chamfer"] == [0.0] * 3
    assert frozen["summary"]["jitter"] == pytest.approx(np.mean(frozen["temporal"]["gt_step_chamfer"]), rel=1e-12)
    # Each frame moved rigidly by its own ~2 degree / 0.02 shake.
    rng = np.random.default_rng(0)
    shaken = [(Similarity(1.0, Rotation.from_rotvec(rng.normal(size=3) * 0.03).as_matrix(), rng.normal(size=3) * 0.02).apply(v), f)
              for v, f in gt]
    r = metrics.evaluate_clip(shaken, gt, CLIP_CFG)["summary"]
    assert r["jitter"] > 0.005
    assert r["align_rotation_std_deg"] > 1.0 and r["align_translation_std"] > 0.01
    assert r["align_scale_std"] < 1e-6  # rigid shakes: the per-frame scales agree


def test_evaluate_clip_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same number"):
        metrics.evaluate_clip([UNIT], [UNIT, UNIT])
