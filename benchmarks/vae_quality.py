"""Reconstruction quality of the small-scale base's VecSet VAE on held-out frames, per training setting.

    python -m benchmarks.vae_quality --data /tmp/vaeq/ds --runs base loss=tsdf --eval-at 150,300 --mesh-frames 16
    python -m benchmarks.vae_quality --data /tmp/vaeq/ds --runs sample=0 lr=3e-3 --eval-at 300 --mesh-frames 16
    python -m benchmarks.vae_quality --data /tmp/vaeq/ds --runs base --eval-at 500,1000 --mesh-frames 16
    python -m benchmarks.vae_quality --data /tmp/vaeq/ds --checkpoint out/ablation/base-<key> --mesh-frames 16

The dataset is the ablation's (jobs/configs/ablate.yaml `dataset:`, what `jobs.ablate` stage 1 builds):
    python -m jobs.build_dataset --config jobs/configs/procedural.yaml source.kind=procedural \
      source.count=192 output.name=procedural-4d-small num_frames=8 num_surface_points=4096 \
      num_sharp_points=0 num_queries=256 queries.num_candidates=4096 watertight.resolution=64 \
      watertight.min_component_ratio=0.05 sdf.num_volume=2048 sdf.num_near=2048 render.resolution=56 \
      split.val=0.0 split.test=0.1 limits.memory_per_asset_gb=1 ray.num_cpus=1 \
      output.log_to_mlflow=false output.path=/tmp/vaeq/ds
(169 train / 23 test clips, 8 frames each; ~17 min on 1 core). Under `python -m` the asset workers
failed with "Can't pickle <class '__main__.DatasetJobConfig'>" (every asset); the same arguments
through `config_lib.run_job(build_dataset.main, build_dataset.DatasetJobConfig, build_dataset.__doc__,
argv)` from an imported `jobs.build_dataset` build it. Each `--runs` entry trains the VAE
from scratch exactly as `jobs.pretrain_base`'s "vae" phase does (its `Phase` with warm-up + cosine
to 10%, `_subset`, `model.fit.vae_loss`, weights seeded by `components.random_base`, batches by
`np.random.default_rng(0)`), with the defaults of jobs/configs/ablate.yaml (tiny VAE, lr 1e-3,
16 frames, warm-up 20, 2048 surface / 4096 SDF points, kl 1e-3), and is evaluated at every
`--eval-at` step on the TEST split. A run is `base` or comma-separated overrides of those
defaults, e.g. `lr=3e-3,batch=8` or `width=128,embed_dim=16`:

  steps        schedule length (default: the largest --eval-at); checkpoints before it are
               mid-schedule (learning rate not yet decayed), the last one is the exact run
  lr, batch, warmup, kl, sample (posterior sampling 1/0), surface_points, sdf_points
  width, heads, embed_dim, enc_layers, dec_layers, num_freqs   (VAEConfig; only the tiny
               widths match the DiT: its in_channels must equal embed_dim)
  loss         mse (= model.fit.vae_loss) | tsdf (MSE on clamp(sdf, +-tau) / tau, Step1X-3D's
               `tsdf` option) | bce (occupancy logits, Step1X-3D's `occupancy` option) | l1
  tau          tsdf truncation (default 0.05)
  near_weight  weight of the near-surface points in the mse loss (uniform points weigh 1)
  queries      uniform queries per frame: an FPS subset of the stored ones (0 = all stored)
  sharp_queries  sharp-edge queries per frame through the sharp branch, FPS subset (-1 = all
               stored, 0 = none); sharp_surface 1/0: the sharp-edge surface points in or out.
               With a dataset built with both query sets, `queries=128,sharp_queries=128` vs
               `queries=256,sharp_queries=0` is the latent split at a fixed latent count
               (issue 14 part 5; the FPS subset is per frame, which a VAE, frame by frame, allows)
  train_frames train on only this many training frames (evenly spaced; 0 = all), and report
               `train IoU` on exactly those: can the VAE fit a few frames at all (capacity),
               apart from how fast it fits the whole set (steps)

Metrics (test frames, posterior mean, a fixed surface subset per frame): sign accuracy on the
shard's `sdf_volume` points (uniform in the cube), on its `sdf_near` points (split by their noise
sigma: the near block is written sigma by sigma) and on all; volume IoU on the uniform points
(inside = SDF < 0 in the shard, field > 0 for the VAE), mean over frames; Chamfer distance
(unsquared, both directions summed, pipelines.metrics' definition) between `model.mesh.extract`
of the decoded field at --mesh-resolution (the dataset's watertight grid by default) and the
frame's surface points (on the watertight mesh): the median over --mesh-frames frames, an empty
mesh counting as inf. `train IoU` is the same
IoU on training frames (fit vs generalisation); `IoU shuffled` decodes every test frame's points with
another test frame's latents (close to IoU: the decoder ignores the latents). Reference rows: a constant "all outside"
predictor, and the Chamfer floor of the GT surface points (2048 vs 2048, half vs half). `wall s` / `cpu s`:
training only. `--checkpoint` adds a row for a trained base's VAE as it is (no training), e.g. the
one the ablation's rows share. Keep to one thread: `--threads 1` (default).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jobs import components, ingest
from jobs.pretrain_base import Phase, PhaseConfig, _subset, load_frames
from model.base import BaseConfig
from model.fit import vae_loss
from model.mesh import MeshConfig, extract
from model.vae import VecSetVAE
from pipelines.metrics import nearest_distances, nn_tree, sample_points
from pipelines.sdf import morton_order, near_counts, SdfConfig

log = logging.getLogger("shapegen4d.vae_quality")

# jobs/configs/ablate.yaml's pretrain section (vae phase) and PretrainConfig's defaults.
DEFAULTS = dict(steps=0, lr=1e-3, batch=16, warmup=20, kl=1e-3, sample=1, surface_points=2048, sdf_points=4096,
                loss="mse", tau=0.05, near_weight=1.0, seed=0, queries=0, sharp_queries=-1, sharp_surface=1,
                train_frames=0)
VAE_KEYS = {"width": "width", "heads": "heads", "embed_dim": "embed_dim", "enc_layers": "num_encoder_layers",
            "dec_layers": "num_decoder_layers", "num_freqs": "num_freqs"}


def parse_run(spec: str) -> dict:
    run = dict(DEFAULTS)
    if spec == "base":
        return run
    for item in spec.split(","):
        key, _, value = item.partition("=")
        if key not in DEFAULTS and key not in VAE_KEYS:
            raise SystemExit(f"unknown run key {key!r} in {spec!r}; known: {sorted(DEFAULTS) + sorted(VAE_KEYS)}")
        default = DEFAULTS.get(key, 0)
        if isinstance(default, str):
            run[key] = value
        elif isinstance(default, int):
            run[key] = int(float(value))
        else:
            run[key] = float(value)
    return run


def build_vae(run: dict) -> VecSetVAE:
    """The tiny base's VAE, seeded like jobs.pretrain_base (components.random_base); other widths
    are built under the same seed."""
    base = components.random_base(BaseConfig(size="tiny"))
    over = {VAE_KEYS[k]: int(run[k]) for k in VAE_KEYS if k in run}
    if not over:
        return base.vae
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VecSetVAE(dataclasses.replace(base.vae.cfg, **over))


def _fps_each(queries_FQ6: np.ndarray, n: int) -> np.ndarray:
    """An FPS subset of n of every frame's queries (all when n <= 0 or n >= Q)."""
    from pipelines.queries import fps

    if n <= 0 or n >= queries_FQ6.shape[1]:
        return queries_FQ6
    return np.stack([q[fps(q[:, :3], n, tree_height=3)] for q in queries_FQ6])


def run_inputs(surface, queries, sharp_surface, sharp_queries, run: dict) -> tuple:
    """The encoder inputs of frames under a run's query split (numpy; sharp sets may be None)."""
    nq, ns = int(run["queries"]), int(run["sharp_queries"])
    sharp_q = None if sharp_queries is None or ns == 0 else _fps_each(sharp_queries, ns)
    return surface, _fps_each(queries, nq), sharp_surface if run["sharp_surface"] else None, sharp_q


def variant_loss(vae: VecSetVAE, inputs: tuple, pts_sdf_near, run: dict):
    """Like model.fit.vae_loss (same sign flip, same KL), with the run's loss / near weighting."""
    points, sdf_neg, near = pts_sdf_near[..., :3], pts_sdf_near[..., 3], pts_sdf_near[..., 4]
    z, mean, logvar = vae.encode(*inputs, sample=bool(run["sample"]))
    pred = vae.query(points, vae.decode(z))[..., 0]
    target = -sdf_neg  # positive inside
    if run["loss"] == "tsdf":
        rec = F.mse_loss(pred, target.clamp(-run["tau"], run["tau"]) / run["tau"], reduction="none")
    elif run["loss"] == "bce":
        rec = F.binary_cross_entropy_with_logits(pred, (target > 0).float(), reduction="none")
    elif run["loss"] == "l1":
        rec = (pred - target).abs()
    elif run["loss"] == "mse":
        rec = (pred - target) ** 2
    else:
        raise SystemExit(f"unknown loss {run['loss']!r}")
    w = 1.0 + (run["near_weight"] - 1.0) * near
    rec = (rec * w).sum() / w.sum()
    kl = VecSetVAE.kl(mean, logvar).mean()
    with torch.no_grad():
        sign_acc = ((pred > 0) == (target > 0)).float().mean()
    return rec + run["kl"] * kl, {"sdf": rec.detach(), "kl": kl.detach(), "sign_acc": sign_acc}


def frame_families(info: ingest.DatasetInfo, split: str) -> np.ndarray:
    """The procedural family of every frame, in load_frames' order (shards in manifest order, rows
    of the split, T frames each)."""
    import pyarrow.compute as pc

    T = int(info.manifest["config"]["num_frames"])
    fams = []
    for shard in info.manifest["shards"]:
        t = ingest.read_shard(info, shard["path"], ["sample_id", "split"])
        ids = t.filter(pc.equal(t["split"], split))["sample_id"].to_pylist()
        fams += [sid.split("-")[1] if sid.startswith("proc-") else "other" for sid in ids for _ in range(T)]
    return np.array(fams)


class Evaluator:
    """The held-out frames, their fixed encoder inputs, and the metrics of one VAE."""

    def __init__(self, frames, info: ingest.DatasetInfo, surface_points: int, num_frames: int, mesh_frames: int,
                 mesh_resolution: int, families: np.ndarray | None = None, seed: int = 1):
        idx = np.linspace(0, frames.count - 1, min(num_frames, frames.count)).round().astype(int)
        self.families = families[idx] if families is not None and len(families) == frames.count else None
        rng = np.random.default_rng(seed)
        self.surface = _subset(frames.surface[idx], surface_points, rng)
        self.queries = frames.queries[idx]
        self.sharp_surface = None if frames.sharp_surface is None else frames.sharp_surface[idx]
        self.sharp_queries = None if frames.sharp_queries is None else frames.sharp_queries[idx]
        self.sdf = frames.sdf[idx]
        self.gt_surface = frames.surface[idx, :, :3]
        cfg = info.manifest.get("config", {}).get("sdf", {})
        self.num_volume = int(cfg.get("num_volume", self.sdf.shape[1] // 2))
        sigmas = tuple(cfg.get("near_sigmas", SdfConfig.near_sigmas))
        counts = near_counts(SdfConfig(num_near=self.sdf.shape[1] - self.num_volume, near_sigmas=sigmas))
        self.groups = [(f"near s={s:g}", slice(self.num_volume + sum(counts[:i]), self.num_volume + sum(counts[:i + 1])))
                       for i, s in enumerate(sigmas)]
        self.mesh_idx = np.linspace(0, len(idx) - 1, min(mesh_frames, len(idx))).round().astype(int)
        self.mesh_cfg = MeshConfig(resolution=mesh_resolution, bounds=1.05, coarse_factor=4 if mesh_resolution % 4 == 0 else 1)

    def constant_outside(self) -> dict:
        return self._scores(np.full(self.sdf.shape[:2], -1.0, np.float32))

    def floor(self) -> float:
        """Chamfer between the two halves of the GT surface points: the metric's sampling floor."""
        cds = []
        for i in self.mesh_idx:
            p = self.gt_surface[i]
            a, b = p[: len(p) // 2], p[len(p) // 2:]
            cds.append(_chamfer(a, b))
        return float(np.mean(cds))

    @torch.no_grad()
    def __call__(self, vae: VecSetVAE, run: dict, meshes: bool = True) -> dict:
        vae.eval()
        to = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        part = lambda a, i: None if a is None else a[i:i + 16]  # noqa: E731
        preds, latents = [], []
        for i in range(0, len(self.sdf), 16):
            inputs = run_inputs(*(part(a, i) for a in (self.surface, self.queries, self.sharp_surface, self.sharp_queries)), run)
            _, mean, _ = vae.encode(*map(to, inputs), sample=False)
            dec = vae.decode(mean)
            preds.append(vae.query(to(self.sdf[i:i + 16, :, :3]), dec)[..., 0].numpy())
            latents.extend(dec[j:j + 1] for j in range(len(dec)))
        out = self._scores(np.concatenate(preds))
        # The same points decoded with ANOTHER frame's latents (rolled by half the set): an IoU close
        # to `iou` means the decoder ignores the latents (a mean shape).
        shift = len(latents) // 2
        shuf = np.concatenate([vae.query(to(self.sdf[i:i + 1, :, :3]), latents[(i + shift) % len(latents)])[..., 0].numpy()
                               for i in range(len(latents))])
        out["iou_shuffled"] = self._scores(shuf)["iou"]
        if meshes:
            cds = []
            for i in self.mesh_idx:
                dec = latents[i]
                v, f = extract(lambda xyz: vae.query(xyz[None], dec)[0, :, 0], self.mesh_cfg)
                pts = sample_points(v, f, len(self.gt_surface[i]), seed=0)
                cds.append(math.inf if pts is None else _chamfer(pts, self.gt_surface[i]))
            out["chamfer"] = float(np.median(cds))
            out["empty"] = int(np.sum(~np.isfinite(cds)))
        vae.train()
        return out

    def _scores(self, pred_FM: np.ndarray) -> dict:
        gt_in = self.sdf[..., 3] < 0
        ok = (pred_FM > 0) == gt_in
        nv = self.num_volume
        out = {"uniform": ok[:, :nv].mean(), "near": ok[:, nv:].mean(), "all": ok.mean()}
        out.update({name: ok[:, s].mean() for name, s in self.groups})
        a, b = pred_FM[:, :nv] > 0, gt_in[:, :nv]
        inter, union = (a & b).sum(1), (a | b).sum(1)
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        out["iou"] = float(np.nanmean(iou))
        if self.families is not None:
            out.update({f"iou:{f}": np.nanmean(iou[self.families == f]) for f in sorted(set(self.families))})
        out["inside_frac"] = b.mean()
        return {k: float(v) for k, v in out.items()}


def _chamfer(a: np.ndarray, b: np.ndarray) -> float:
    ab = nearest_distances(nn_tree(b), a, morton_order(a))
    ba = nearest_distances(nn_tree(a), b, morton_order(b))
    return float(ab.mean() + ba.mean())


def assess(vae: VecSetVAE, run: dict, evaluator: Evaluator, train_eval: Evaluator | None) -> dict:
    """`evaluator`'s scores of `vae`, plus `train_iou` on the training frames (NaN without them)."""
    res = evaluator(vae, run)
    res["train_iou"] = train_eval(vae, run, meshes=False)["iou"] if train_eval is not None else math.nan
    return res


def train_and_eval(name: str, run: dict, frames, evaluator: Evaluator, train_eval: Evaluator, eval_at: list[int]) -> list[dict]:
    steps = int(run["steps"]) or max(eval_at)
    checkpoints = sorted({s for s in eval_at if s <= steps} | {steps})
    torch.manual_seed(run["seed"])
    vae = build_vae(run)
    rng = np.random.default_rng(int(run["seed"]))
    to = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    is_near = np.zeros(frames.sdf.shape[:2] + (1,), np.float32)
    is_near[:, evaluator.num_volume:] = 1.0
    sdf5 = np.concatenate([frames.sdf, is_near], axis=2)  # the flag rides along through _subset
    exact = run["loss"] == "mse" and run["near_weight"] == 1.0 and run["sample"] == 1
    rows, clock = [], {"wall": 0.0, "cpu": 0.0, "t": time.time(), "c": time.process_time()}

    def evaluate(step: int) -> None:
        clock["wall"] += time.time() - clock["t"]
        clock["cpu"] += time.process_time() - clock["c"]
        row = {"setting": name, "steps": step, "of": steps, "wall_s": clock["wall"], "cpu_s": clock["cpu"],
               **assess(vae, run, evaluator, train_eval)}
        rows.append(row)
        print(fmt_row(row), flush=True)
        clock["t"], clock["c"] = time.time(), time.process_time()

    def step_fn(step: int):
        if step in checkpoints and step:
            evaluate(step)
        i = rng.integers(0, frames.count, int(run["batch"]))
        sharp = lambda a: None if a is None else a[i]  # noqa: E731
        inputs = [to(a) for a in run_inputs(_subset(frames.surface[i], int(run["surface_points"]), rng), frames.queries[i],
                                            sharp(frames.sharp_surface), sharp(frames.sharp_queries), run)]
        sdf = _subset(sdf5[i], int(run["sdf_points"]), rng)
        if exact:  # jobs.pretrain_base's call
            return vae_loss(vae, inputs[0], inputs[1], to(sdf[..., :3]), to(sdf[..., 3]), kl_weight=run["kl"],
                            sharp_surface_BN6=inputs[2], sharp_queries_BL6=inputs[3])
        return variant_loss(vae, inputs, to(sdf), run)

    cfg = PhaseConfig(steps=steps, batch_frames=int(run["batch"]), lr=run["lr"], warmup_steps=int(run["warmup"]),
                      checkpoint_every=10**9)
    with tempfile.TemporaryDirectory(prefix="vae_quality-") as tmp:
        Phase("vae", vae, cfg, Path(tmp)).run(step_fn, max(steps // 10, 1), lambda m, s: None)
    evaluate(steps)
    return rows


COLUMNS = ["setting", "steps", "wall s", "cpu s", "uniform", "near", "all", "IoU", "train IoU", "IoU shuffled", "Chamfer"]


def fmt_row(r: dict) -> str:
    steps = f"{r['steps']}" + (f"/{r['of']}" if r.get("of", r["steps"]) != r["steps"] else "")
    cd = r.get("chamfer", math.nan)
    cells = [r["setting"], steps, f"{r.get('wall_s', math.nan):.0f}", f"{r.get('cpu_s', math.nan):.0f}",
             f"{r['uniform']:.3f}", f"{r['near']:.3f}", f"{r['all']:.3f}", f"{r['iou']:.3f}",
             f"{r.get('train_iou', math.nan):.3f}", f"{r.get('iou_shuffled', math.nan):.3f}", f"{cd:.4f}" + (f" ({r['empty']} empty)" if r.get("empty") else "")]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", required=True, help="dataset folder (the ablation's procedural set)")
    ap.add_argument("--runs", nargs="*", default=None,
                    help="`base` or comma-separated key=value overrides (default: base, or none with --checkpoint)")
    ap.add_argument("--checkpoint", default="", help="also evaluate this trained base's VAE as it is (a "
                    "jobs.pretrain_base output_path, e.g. the ablation's <output_path>/base-<key>)")
    ap.add_argument("--eval-at", default="300", help="comma-separated steps to evaluate at")
    ap.add_argument("--eval-frames", type=int, default=10**6, help="test frames (evenly spaced; default all)")
    ap.add_argument("--train-eval-frames", type=int, default=128, help="train frames for `train IoU` (0 = skip)")
    ap.add_argument("--mesh-frames", type=int, default=24, help="test frames meshed for the Chamfer distance")
    ap.add_argument("--mesh-resolution", type=int, default=0, help="marching-cubes cells (0 = the dataset's watertight grid)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    eval_at = sorted(int(s) for s in args.eval_at.split(","))
    specs = args.runs if args.runs is not None else ([] if args.checkpoint else ["base"])
    runs = [(spec, parse_run(spec)) for spec in specs]

    info = ingest.open_dataset(args.data)
    train, test = load_frames(info, "train"), load_frames(info, "test")
    res = args.mesh_resolution or int(info.manifest.get("config", {}).get("watertight", {}).get("resolution", 64))
    evaluator = Evaluator(test, info, DEFAULTS["surface_points"], args.eval_frames, args.mesh_frames, res,
                          frame_families(info, "test"))
    train_eval = (Evaluator(train, info, DEFAULTS["surface_points"], args.train_eval_frames, 0, res)
                  if args.train_eval_frames else None)
    ref = evaluator.constant_outside()
    print(f"{train.count} train / {test.count} test frames ({len(evaluator.sdf)} evaluated, {len(evaluator.mesh_idx)} "
          f"meshed at {res}^3); uniform points inside: {ref['inside_frac']:.3f} of the test frames'", flush=True)
    print("near-surface sign accuracy by sigma is in the per-run lines below the table", flush=True)
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    print(header, flush=True)
    rows = [{"setting": "const. all outside", "steps": 0, **ref, "chamfer": math.nan},
            {"setting": "GT points half/half (CD floor)", "steps": 0, **{k: math.nan for k in ref},
             "iou": math.nan, "chamfer": evaluator.floor()}]
    for r in rows:
        print(fmt_row(r), flush=True)
    if args.checkpoint:  # no training: the base's VAE with the default inputs
        vae = components.base_for(BaseConfig(size="tiny", checkpoint=args.checkpoint)).vae
        rows.append({"setting": f"checkpoint {Path(args.checkpoint).name}", "steps": "-",
                     **assess(vae, parse_run("base"), evaluator, train_eval)})
        print(fmt_row(rows[-1]), flush=True)
    for spec, run in runs:
        frames, fit_eval, n = train, train_eval, int(run["train_frames"])
        if 0 < n < train.count:  # n evenly spaced frames, and `train IoU` on exactly those
            idx = np.linspace(0, train.count - 1, n).round().astype(int)
            columns = {f.name: getattr(train, f.name) for f in dataclasses.fields(train)}
            frames = dataclasses.replace(train, **{k: None if a is None else a[idx] for k, a in columns.items()})
            fit_eval = Evaluator(frames, info, DEFAULTS["surface_points"], n, 0, res)
        rows += train_and_eval(spec, run, frames, evaluator, fit_eval, eval_at)

    print("\n" + header)
    for r in rows:
        print(fmt_row(r))
    print("\nnear-surface sign accuracy by noise sigma:")
    names = [name for name, _ in evaluator.groups]
    print("| setting | steps | " + " | ".join(names) + " |\n|" + "---|" * (2 + len(names)))
    for r in rows[:1] + rows[2:]:
        print(f"| {r['setting']} | {r['steps']} | " + " | ".join(f"{r[n]:.3f}" for n in names) + " |")
    fams = sorted(k for k in ref if k.startswith("iou:"))
    if fams:
        print("\ntest IoU by procedural family (frames: " + ", ".join(
            f"{k[4:]} {int(np.sum(evaluator.families == k[4:]))}" for k in fams) + "):")
        print("| setting | steps | " + " | ".join(k[4:] for k in fams) + " |\n|" + "---|" * (2 + len(fams)))
        for r in rows[2:]:
            print(f"| {r['setting']} | {r['steps']} | " + " | ".join(f"{r[k]:.3f}" for k in fams) + " |")


if __name__ == "__main__":
    main()
