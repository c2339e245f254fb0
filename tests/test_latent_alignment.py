"""The token-alignment probe of benchmarks/latent_alignment.py on shapes whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.latent_alignment import latent_step, query_stats
from model.base import build_base


def test_query_step_is_the_motion_and_spacing_the_grid_pitch():
    g = np.stack(np.meshgrid(*[np.arange(4) * 0.1] * 3, indexing="ij"), -1).reshape(-1, 3)  # pitch 0.1
    frames = np.stack([g + [0.03 * t, 0.04 * t, 0.0] for t in range(5)])  # 0.05 a frame
    q = np.concatenate([frames, np.zeros_like(frames)], -1)
    step, spacing = query_stats(q)
    assert step == pytest.approx(0.05, abs=1e-6) and spacing == pytest.approx(0.1, abs=1e-6)


def test_latent_step_is_zero_for_a_still_clip_and_about_one_for_unrelated_tokens():
    torch.manual_seed(0)
    vae = build_base("step1x3d", "tiny").vae.eval()
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(512, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True) * 2  # a sphere of radius 0.5, normals outward
    surface = np.concatenate([xyz, 2 * xyz], 1).astype(np.float32)
    surface_TN6 = np.stack([surface] * 4)
    queries_TL6 = surface_TN6[:, :64].copy()
    assert latent_step(vae, surface_TN6, queries_TL6, 256, seed=0) == pytest.approx(0.0, abs=1e-6)
    shuffled = np.stack([f[rng.permutation(64)] for f in queries_TL6])
    # a token against a random other token of the next frame: as far apart as two tokens of one frame
    assert latent_step(vae, surface_TN6, shuffled, 256, seed=0) == pytest.approx(1.0, abs=0.1)
