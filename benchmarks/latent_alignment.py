"""How aligned the S-T layers' tokens are across frames: aligned (propagated) vs independent (FPS per
frame) queries, in the data and through the frozen base's VAE encoder.

    python -m benchmarks.latent_alignment --aligned out/ablation/datasets/<aligned> \
        --independent out/ablation/datasets/<independent> --base out/ablation/base-<key>

The paper's aligned-query ablation rests on token k of every frame standing for the same physical
point, so that the shared noise and the temporal attention relate like with like. This measures
that premise on the two datasets `jobs.ablate` builds (same assets, same split), clip by clip:

  query step     mean over tokens k and adjacent frames t of |q[t+1,k] - q[t,k]| (xyz)
  query spacing  mean distance of a query to its nearest other query in the same frame (the FPS
                 spacing): a step well below it means token k stays on its point
  latent step    mean |z[t+1,k] - z[t,k]| of the base VAE's scaled posterior means (what the DiT
                 and the S-T layers see), divided by the mean |z[t,k] - z[t,j]| over token pairs
                 j != k of the same frame: 1 = no more alike than two unrelated tokens

The `aligned, tokens permuted` row is the reference for no correspondence at all: the aligned
clips with a random token order in every frame. Means are over clips with a 95% clip-bootstrap
interval. CPU, seconds.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from jobs import components, ingest
from jobs.evaluate import clip_interval, clip_picks
from model.base import BaseConfig
from pipelines.metrics import nn_tree


def load_clips(path: str, split: str, limit: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{sample_id: (surface [T,N,6], queries [T,L,6])} of the split's first `limit` clips by id."""
    return {sid: (c["surface"], c["queries"]) for sid, c in ingest.read_clips(ingest.open_dataset(path), split, limit).items()}


def query_stats(queries_TL6: np.ndarray) -> tuple[float, float]:
    """(query step, query spacing) of one clip."""
    xyz = queries_TL6[..., :3]
    step = float(np.linalg.norm(xyz[1:] - xyz[:-1], axis=-1).mean())
    spacing = float(np.mean([nn_tree(f).query(f, k=2)[0][:, 1].mean() for f in xyz]))
    return step, spacing


@torch.no_grad()
def latent_step(vae, surface_TN6: np.ndarray, queries_TL6: np.ndarray, num_surface: int, seed: int) -> float:
    """Token-wise step between adjacent frames over the mean distance of two tokens of one frame."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(surface_TN6.shape[1], size=min(num_surface, surface_TN6.shape[1]), replace=False))
    z_TLC, _, _ = vae.encode(torch.from_numpy(surface_TN6[:, pick]), torch.from_numpy(queries_TL6), sample=False)
    step = (z_TLC[1:] - z_TLC[:-1]).norm(dim=-1).mean()
    pair_TLL = torch.cdist(z_TLC, z_TLC)
    L = z_TLC.shape[1]
    spread = pair_TLL.sum() / (pair_TLL.shape[0] * L * (L - 1))
    return float(step / spread)


def mean_ci(x_C: np.ndarray) -> tuple[float, float, float]:
    """Mean over clips and its 95% clip-bootstrap interval (jobs.evaluate's, one value per clip)."""
    return float(x_C.mean()), *clip_interval(np.stack([x_C, np.ones_like(x_C)], 1), clip_picks(len(x_C), 2000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aligned", required=True, help="dataset built with queries.mode=aligned")
    ap.add_argument("--independent", required=True, help="the same assets built with queries.mode=independent")
    ap.add_argument("--base", required=True, help="base checkpoint folder (jobs.pretrain_base's output_path)")
    ap.add_argument("--size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="first N clips by sample id (0 = all)")
    ap.add_argument("--surface-points", type=int, default=2048, help="encoder input per frame (fine-tuning's)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    vae = components.base_for(BaseConfig(size=args.size, checkpoint=args.base)).vae
    aligned = load_clips(args.aligned, args.split, args.limit)
    independent = load_clips(args.independent, args.split, args.limit)
    if aligned.keys() != independent.keys():
        raise ValueError(f"the two datasets' {args.split!r} clips differ: "
                         f"{sorted(aligned.keys() ^ independent.keys())[:5]} ...")
    rng = np.random.default_rng(0)

    def permuted(q_TL6: np.ndarray) -> np.ndarray:
        return np.stack([f[rng.permutation(len(f))] for f in q_TL6])

    rows = {"aligned (propagated)": aligned, "independent (FPS per frame)": independent,
            "aligned, tokens permuted": {k: (s, permuted(q)) for k, (s, q) in aligned.items()}}
    print(f"{len(aligned)} {args.split} clips, {next(iter(aligned.values()))[1].shape[:2]} frames x queries\n")
    print("| queries | query step | query spacing | step / spacing | latent step / token spread |")
    print("|---|---|---|---|---|")
    for name, clips in rows.items():
        q = np.array([query_stats(qs) for _, qs in clips.values()])
        z = np.array([latent_step(vae, s, qs, args.surface_points, i) for i, (s, qs) in enumerate(clips.values())])
        cells = [mean_ci(q[:, 0]), mean_ci(q[:, 1]), mean_ci(q[:, 0] / q[:, 1]), mean_ci(z)]
        print(f"| {name} | " + " | ".join(f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in cells) + " |")


if __name__ == "__main__":
    main()
