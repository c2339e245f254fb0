"""Evaluate a registered model on a dataset split: `python -m jobs.evaluate --config jobs/configs/evaluate.yaml [key=value ...]`.

    python -m jobs.evaluate --config jobs/configs/evaluate.yaml model=models:/shapegen4d@candidate \
        data.path=out/demo-dataset split=test [limit=50] [promote=true]

Protocol (what one evaluation is):
1. Clips: every row of `split` of the dataset at `data.path`, in shard order (the first `limit`
   when limit > 0). The conditioning video of each row (its PNG frames) is the model's input.
2. Prediction: the pyfunc model, loaded from the registry by its resolved VERSION (an alias is
   read once, so a moving alias cannot change the model mid-run):
   `predict(frames, params={"seed", "steps", "mesh_resolution"})` (0 = the model's default),
   `seeds` times per clip: clip i's draw k with seed `seed + i + k * n_clips`, so every clip and
   draw has its own noise (one seed for every clip would make a shared-noise row all-or-nothing).
3. Ground truth: rebuilt from the clip's source asset, not read from the shards (the shards hold
   samples, not meshes): the asset is listed and fetched with the dataset's own source config
   (the manifest's `config.source`, `data.source_path` overriding where the files now are), its
   bytes must have the row's `source_sha256`; the animation `animation_index` is baked at the
   clip's frame times (the float64 times the dataset job planned, recovered from the asset and
   checked against the row's float32 `frame_times`; else the row's), normalised by the row's
   stored `normalization` (center, scale; never recomputed), then made watertight per frame by
   the dataset's watertight stage with the dataset's `config.watertight` (normalise + watertight
   are `pipelines.process.watertight_frames`, the very function the build's stage calls). Same pure
   pipelines/ functions as the build (`pipelines.ground_truth`), so the rebuilt meshes are the ones the
   shards' `surface` points were sampled from.
4. Metrics: `pipelines.metrics.evaluate_clip(pred, gt, metrics)` per clip (both in the clip's
   normalised [-1,1]^3 frame); the evaluation's summary is the mean over evaluated clips of each
   clip summary metric (raw and `_aligned`, jitter, alignment spread); NaN clip values are left
   out of a mean, an infinite one (an empty predicted frame gives CD inf) makes it inf. Each
   summary metric also gets a 95% interval (`summary_ci`): a percentile bootstrap that resamples
   CLIPS with replacement (`bootstrap` times) and averages all draws of the clips drawn, because
   draws of one clip are not independent of each other; its bounds are order statistics of the
   resample means, so a metric that is inf in some resamples gets an inf bound, never NaN. `empty_frame_rate` is the share of
   predicted frames without a face, over every clip and draw.
   Silhouettes (mean over frames of the IoU with the video's object mask, the row's alpha):
   `silhouette_iou_front` the canonical meshes seen from the front, as without registration;
   `silhouette_iou_registered` after the model's own pose registration to the masks
   (pipelines.registration, what predict returns); `silhouette_iou_true_camera` the canonical
   meshes through the camera the row was rendered with (the ceiling registration aims at).
   Conditioning gap (does the output depend on the video?): `chamfer_other_clips` is the mean,
   over the OTHER evaluated clips, of the frame-by-frame Chamfer of the prediction to that clip's
   ground truth, and `conditioning_gap` that minus the same Chamfer to the clip's own ground
   truth (`gap_points` samples per frame; > 0 and its interval above 0 = the video is read).
5. Protocol digest: sha256 of (dataset digest, split, the requested sample_ids, the metric config
   without `workers`, gap_points, seed/steps/mesh_resolution). Two evaluations are comparable only when their
   protocol digests are equal and both evaluated every clip.

A clip whose ground truth cannot be rebuilt (source asset missing or changed, a stage error) or
whose prediction fails is an error row (status "error", stage, reason, detail); the others go on.
The job exits 1 only when no clip could be evaluated.

Outputs: <output.path>/metrics.json (protocol, summary, summary_ci, one entry per clip and draw
with per-frame values; non-finite numbers are null; `clips_*` count those entries) and
metrics.csv (one row per clip and draw). MLflow: an evaluation run in
experiment `mlflow.experiment` (params: model URI and version, dataset digest, split, metric
config, generation params; the summary as metrics (finite ones, each interval as `<metric>_ci_low`
/ `_ci_high`), the intervals as the JSON tag `eval.summary_ci`, the summary as the JSON tag
`eval.summary`; the files as artifacts; tags `model.*`, `dataset.digest`, `eval.protocol`; the
dataset as an input of context "evaluation"; `previews/<sample_id>/` for the first `output.previews`
clips: sequence.glb, preview.mp4, per-frame meshes, registration.json, pipelines.export), and on
the evaluated MODEL VERSION the tags
`eval.<split>.<metric>` (every summary metric), `eval.<split>.run_id`, `.dataset_digest`,
`.protocol`, `.clips`, `.clips_failed`: the latest evaluation per split.

Promotion (`promote=true`, registered models only): alias `champion_alias` moves to the evaluated
version only when its `promote_metric` beats the current champion's by more than
`promote_min_delta` (`promote_mode` lower|higher is better; ties never promote, NaN never
compares) under the SAME protocol. The champion's value comes from its `eval.<split>.*` tags when
their protocol matches, else from an earlier evaluation run of that protocol; if it has none, the
champion is evaluated here too on the same clips (`evaluate_champion`, default true; false =
refuse before any work). No current champion: the evaluated version becomes champion. Promotion
needs a complete evaluation (no error row) of both versions. The decision is a log line and tags
`promotion.decision` (promoted | kept | refused), `promotion.reason` (both values), `promotion.alias`,
`promotion.run_id` on the evaluated version (and on its evaluation run).

Exit status: 0 done (the promotion decided, promoted or kept), 1 could not run (no manifest, a
shard of the split whose sha256 is not the manifest's (`data.verify_sha256`), no rows in the
split, model URI not found, nothing evaluated, a promotion that could not be decided), 2 bad
config key.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from jobs import config as config_lib
from jobs import registry, tracking
from jobs.registry import ModelRef, current_champion, decide, load_model, resolve_model
from jobs.ingest import read_videos  # one shard's conditioning videos, sample_id -> uint8 [T,H,W,4]
from pipelines.ground_truth import GroundTruth
from pipelines.metrics import MetricConfig

log = logging.getLogger("shapegen4d.evaluate")


# ------------------------------------------------------------------------------------ config


@dataclass
class EvalDataConfig:
    path: str = "out/dataset"  # a build_dataset output (folder or URI holding manifest.json)
    # Where the source assets are now ("" = the manifest's config.source.path, where they were).
    source_path: str = ""
    # Check the sha256 of the split's shards against manifest.json before evaluating (a changed
    # shard is an error naming it); false for trusted stores: skips hashing every shard at start-up.
    verify_sha256: bool = True


@dataclass
class EvalOutputConfig:
    path: str = "out/evaluation"  # metrics.json + metrics.csv (folder or pyarrow URI)
    previews: int = 4  # clips whose registered, textured sequence and preview.mp4 the MLflow run keeps


@dataclass
class EvaluateConfig:
    model: str = "models:/shapegen4d@candidate"  # models:/name@alias, models:/name/<version>, or any MLflow model URI
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    split: str = "test"
    limit: int = 0  # first N clips of the split (0 = all)
    seed: int = 0  # clip i's draw k is generated with seed + i + k * (number of clips): its own per clip and draw
    seeds: int = 3  # generation draws per clip (the rows of a table need several to be told apart)
    bootstrap: int = 2000  # resamples of the clips for each summary metric's 95% interval (0 = none)
    # Surface samples per frame for `conditioning_gap` (Chamfer to other clips' ground truth minus
    # to the clip's own: > 0 when the output depends on the video); 0 = not computed.
    gap_points: int = 2000
    steps: int = 0  # 0 = the model's default
    mesh_resolution: int = 0  # 0 = the model's default
    metrics: MetricConfig = field(default_factory=MetricConfig)
    output: EvalOutputConfig = field(default_factory=EvalOutputConfig)
    mlflow: tracking.MlflowConfig = field(default_factory=lambda: tracking.MlflowConfig(experiment="shapegen4d-evaluations"))
    promote: bool = False
    champion_alias: str = "champion"
    promote_metric: str = "chamfer_aligned"
    promote_mode: Literal["lower", "higher"] = "lower"  # which direction is better for promote_metric
    promote_min_delta: float = 0.0  # the candidate must be better by more than this
    evaluate_champion: bool = True  # champion without an evaluation of this protocol: evaluate it too (false = refuse)


class EvaluationError(ValueError):
    """The evaluation could not run or could not decide (exit status 1)."""


# ------------------------------------------------------------------------------------ clips


@dataclass
class Clip:
    """One row of the split: identity, where its ground truth comes from, where its video is."""

    sample_id: str
    uid: str
    source: str  # the source kind the row was built from (local | objaverse | procedural)
    source_sha256: str
    animation_index: int
    clip_index: int
    frame_times: np.ndarray  # [T] float32, as stored
    center: np.ndarray  # [3] float64
    scale: float
    shard: str  # shard path relative to the dataset root
    intrinsics: np.ndarray  # [3,3] the camera the row's video was rendered with (OpenCV)
    extrinsics: np.ndarray  # [4,4] world (the clip's normalised frame) -> camera


_CLIP_COLUMNS = ["sample_id", "uid", "source", "source_sha256", "animation_index", "clip_index", "split",
                 "frame_times", "normalization", "camera"]
SILHOUETTE_KEYS = ["silhouette_iou_front", "silhouette_iou_registered", "silhouette_iou_true_camera"]
GAP_KEYS = ["chamfer_other_clips", "conditioning_gap"]  # conditioning_gaps()


def split_shards(info, split: str, limit: int = 0) -> list[str]:
    """The shards (manifest paths) `list_clips` reads: those holding rows of `split`, in manifest
    order, up to the one that completes the first `limit` rows when limit > 0."""
    paths, rows = [], 0
    for shard in info.manifest["shards"]:
        if "splits" in shard and not shard["splits"].get(split):
            continue
        paths.append(shard["path"])
        rows += shard.get("splits", {}).get(split, 0)
        if limit and rows >= limit:
            break
    return paths


def list_clips(info, split: str, limit: int = 0) -> list[Clip]:
    """The rows of `split` in shard order (the first `limit` when > 0), without their arrays."""
    import pyarrow.compute as pc

    from jobs import ingest

    clips: list[Clip] = []
    for path in split_shards(info, split, limit):
        t = ingest.read_shard(info, path, _CLIP_COLUMNS)
        t = t.filter(pc.equal(t["split"], split))
        for r in t.to_pylist():
            clips.append(Clip(r["sample_id"], r["uid"], r["source"], r["source_sha256"], int(r["animation_index"]),
                              int(r["clip_index"]), np.asarray(r["frame_times"], np.float32),
                              np.asarray(r["normalization"]["center"], np.float64), float(r["normalization"]["scale"]),
                              path, np.asarray(r["camera"]["intrinsics"], np.float64).reshape(3, 3),
                              np.asarray(r["camera"]["extrinsics"], np.float64).reshape(4, 4)))
            if limit and len(clips) >= limit:
                return clips
    return clips


# ------------------------------------------------------------------------------ ground truth


def dataset_config(manifest: dict, source_path: str = ""):
    """The DatasetConfig the dataset was built with (the manifest's content config)."""
    from pipelines.config import DatasetConfig

    try:
        cfg = config_lib.from_dict(DatasetConfig, manifest["config"])
    except config_lib.ConfigError as e:
        raise EvaluationError(f"the dataset's manifest config does not load with this code: {e}") from None
    if source_path:
        cfg.source.path = source_path
    return cfg


# ------------------------------------------------------------------------------------ models


# -------------------------------------------------------------------------------- summaries


def mean_over_clips(summaries: list[dict]) -> dict[str, float]:
    """Mean over clips of each summary metric; NaN values left out (NaN when all are), inf kept."""
    keys = sorted({k for s in summaries for k in s})
    out = {}
    for k in keys:
        vals = [float(s[k]) for s in summaries if k in s and not math.isnan(float(s[k]))]
        out[k] = float(np.mean(vals)) if vals else math.nan
    return out


def summary_keys(mcfg: MetricConfig, num_frames: int) -> list[str]:
    """The summary metric names evaluate_clip gives for this config and clip length (asked of the
    metrics code on a tiny pair of boxes, so the list can never drift from it)."""
    from pipelines import metrics, shapes

    v, f = shapes.box_grid((1.0, 0.6, 0.4), (2, 2, 2))
    tiny = dataclasses.replace(mcfg, num_points=64, num_uniform=64, num_near=64, align_points=64,
                               align_iterations=2, temporal_points=64, workers=1)
    frames = [(v + 0.01 * t, f) for t in range(max(num_frames, 1))]
    return sorted([*metrics.evaluate_clip(frames, frames, tiny)["summary"], *SILHOUETTE_KEYS])


def silhouettes(rows: list[dict], frames_THW4: np.ndarray, clip: Clip) -> dict[str, float]:
    """The clip's silhouette IoUs (SILHOUETTE_KEYS, module doc) from predict's rows. A model
    registered before predict registered its meshes returns only vertices and faces: its
    registered IoU is NaN (left out of the summary's mean)."""
    from pipelines import registration

    masks = registration.masks_of(frames_THW4)
    canonical = [(r["vertices"], r["faces"]) for r in rows]
    front = registration.front_view(*masks.shape[1:], registration.RegistrationConfig())
    return {
        "silhouette_iou_front": registration.posed_iou(canonical, masks, front.extrinsics(), front.intrinsics),
        "silhouette_iou_registered": float(np.mean([r["silhouette_iou"] for r in rows]))
        if all("silhouette_iou" in r for r in rows) else math.nan,
        "silhouette_iou_true_camera": registration.posed_iou(canonical, masks, clip.extrinsics, clip.intrinsics),
    }


def extraction() -> dict:
    """The mesh extraction every prediction goes through (model.mesh.MeshConfig's defaults): part
    of the protocol, since evaluations under another are not comparable (band 0, corner signs
    only, lost parts thinner than a coarse cell and left empty frames)."""
    from model.mesh import MeshConfig

    return {"band": MeshConfig().band}


def protocol(cfg: EvaluateConfig, dataset_digest: str, clips: list[Clip]) -> tuple[dict, str]:
    m = config_lib.content(cfg.metrics)
    m.pop("workers", None)  # threads do not change a result
    proto = {"dataset_digest": dataset_digest, "split": cfg.split, "sample_ids": [c.sample_id for c in clips],
             "metrics": m, "gap_points": cfg.gap_points,
             "generation": {"seed": cfg.seed, "seeds": cfg.seeds, "steps": cfg.steps, "mesh_resolution": cfg.mesh_resolution,
                            "extraction": extraction()}}
    return proto, config_lib.digest(proto)[:32]


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, np.generic):
        return _finite_or_none(x.item())
    return x


# -------------------------------------------------------------------------------- promotion


def _champion_value(client, cfg: EvaluateConfig, champ: ModelRef, proto_digest: str) -> tuple[dict | None, str]:
    """The champion's complete evaluation summary under this protocol, and where it came from."""
    import mlflow

    mv = client.get_model_version(champ.name, champ.version)
    pre = f"eval.{cfg.split}."
    tags = mv.tags or {}
    if tags.get(pre + "protocol") == proto_digest and tags.get(pre + "clips_failed") == "0":
        summary = {k[len(pre):]: float(v) for k, v in tags.items() if k.startswith(pre)
                   and k[len(pre):] not in _NON_METRIC_TAGS and _is_number(v)}
        return summary, f"tags of {champ.label} (run {tags.get(pre + 'run_id', '?')})"
    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is not None:
        runs = mlflow.search_runs(
            [exp.experiment_id], output_format="list", order_by=["attributes.start_time DESC"],
            filter_string=(f"tags.`model.name` = '{champ.name}' and tags.`model.version` = '{champ.version}' and "
                           f"tags.`eval.protocol` = '{proto_digest}' and tags.`eval.complete` = 'true'"))
        for run in runs:
            if "eval.summary" in run.data.tags:
                return json.loads(run.data.tags["eval.summary"]), f"evaluation run {run.info.run_id}"
    return None, ""


_NON_METRIC_TAGS = ("run_id", "dataset_digest", "protocol", "clips", "clips_failed")


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """The result of evaluating one model on the clips (what metrics.json holds)."""

    model: ModelRef
    role: str  # candidate | champion
    clips: list[dict] = field(default_factory=list)  # one entry per clip, ok or error
    summary: dict = field(default_factory=dict)
    summary_ci: dict = field(default_factory=dict)  # metric -> [low, high], 95% (module doc)
    run_id: str = ""
    previews: dict[str, str] = field(default_factory=dict)  # sample_id -> local folder (pipelines.export.write_sequence)
    # (sample_id, draw) -> per predicted frame, gap_points surface samples (None: empty frame); not reported
    samples: dict[tuple[str, int], list] = field(default_factory=dict, repr=False)

    @property
    def evaluated(self) -> int:
        return sum(1 for c in self.clips if c["status"] == "ok")

    @property
    def failed(self) -> int:
        return len(self.clips) - self.evaluated

    @property
    def complete(self) -> bool:
        return self.failed == 0 and bool(self.clips)


def _error_row(clip: Clip, stage: str, reason: str, detail: str) -> dict:
    return {"sample_id": clip.sample_id, "uid": clip.uid, "animation_index": clip.animation_index,
            "clip_index": clip.clip_index, "status": "error", "error_stage": stage, "error_reason": reason,
            "error_detail": detail}


def _evaluate_draw(cfg: EvaluateConfig, ev: Evaluation, ref: ModelRef, model, clip: Clip, gt, gt_s: float,
                   frames: np.ndarray, params: dict, draw: int, preview_dir: str) -> str:
    """One generation draw of one clip: predict, score, append the clip entry; returns a status."""
    from pathlib import Path

    from pipelines import metrics
    from pipelines.export import write_sequence

    stage = "generate"
    try:
        t1 = time.time()
        rows = model.predict(frames, params=params)
        pred = [(np.asarray(m["vertices"]), np.asarray(m["faces"])) for m in rows]
        gen_s = time.time() - t1
        stage = "metrics"
        t1 = time.time()
        res = metrics.evaluate_clip(pred, gt, cfg.metrics)
        res["summary"].update(silhouettes(rows, frames, clip))
        if cfg.gap_points:
            ev.samples[(clip.sample_id, draw)] = [metrics.sample_points(v, f, cfg.gap_points, cfg.metrics.seed) for v, f in pred]
        met_s = time.time() - t1
        if draw == 0 and preview_dir and len(ev.previews) < cfg.output.previews and "vertices_camera" in rows[0]:
            stage = "preview"
            folder = Path(preview_dir) / ev.role / clip.sample_id.replace(":", "_")
            write_sequence(rows, frames, folder)
            ev.previews[clip.sample_id] = str(folder)
    except Exception as e:
        detail = traceback.format_exc()
        log.error("%s of %s (seed %d) with %s failed:\n%s", stage, clip.sample_id, params["seed"], ref.label, detail)
        ev.clips.append({**_error_row(clip, stage, "internal_error", f"{type(e).__name__}: {e}\n{detail}"),
                         "seed": params["seed"], "draw": draw})
        return f"{ref.label} seed {params['seed']}: error {stage}"
    ev.clips.append({
        "sample_id": clip.sample_id, "uid": clip.uid, "animation_index": clip.animation_index,
        "clip_index": clip.clip_index, "seed": params["seed"], "draw": draw, "status": "ok", "num_frames": len(gt),
        "gt_faces_mean": float(np.mean([len(f) for _, f in gt])),
        "pred_faces_mean": float(np.mean([len(f) for _, f in pred])),
        "empty_pred_frames": int(sum(1 for _, f in pred if len(f) == 0)),
        "ground_truth_s": gt_s, "generate_s": gen_s, "metrics_s": met_s,
        "summary": res["summary"], "per_frame": res["per_frame"], "alignment": res.get("alignment"),
        "temporal": res["temporal"],
    })
    s = res["summary"]
    return f"{ref.label} seed {params['seed']}: " + ", ".join(
        f"{k} {registry.fmt(s[k])}" for k in ("chamfer_aligned", "fscore_aligned", "iou_aligned", "jitter_aligned",
                                               "silhouette_iou_registered") if k in s) + \
        f" (generate {gen_s:.1f} s, metrics {met_s:.1f} s)"


def clip_picks(n_clips: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """[n_boot, n_clips] clip indices drawn with replacement: the resamples of `clip_interval`."""
    return np.random.default_rng(seed).integers(0, n_clips, size=(n_boot, n_clips))


def clip_interval(per_clip_C2: np.ndarray, picks_BC: np.ndarray) -> list[float]:
    """95% percentile-bootstrap interval of a mean over clips x draws: `per_clip_C2` holds each
    clip's [sum over its draws, number of draws], so a resample's mean weighs every draw of every
    drawn clip alike. Resamples with no draws (count 0) are left out; [nan, nan] if none is left."""
    with np.errstate(invalid="ignore"):
        means = per_clip_C2[picks_BC, 0].sum(1) / per_clip_C2[picks_BC, 1].sum(1)
    means = means[~np.isnan(means)]
    if not len(means):
        return [math.nan, math.nan]
    # Order statistics, not interpolation: between two infinite resample means (a mean over
    # an empty frame's CD) interpolation is inf - inf = NaN; an attained mean is inf or finite.
    return [float(np.percentile(means, 2.5, method="lower")), float(np.percentile(means, 97.5, method="higher"))]


def summarize(entries: list[dict], n_boot: int, seed: int = 0) -> tuple[dict, dict]:
    """(mean over the ok entries of each summary metric plus empty_frame_rate, 95% intervals):
    NaN values are left out, inf kept; intervals by the clip-resampling bootstrap (module doc)."""
    ok = [c for c in entries if c["status"] == "ok"]
    for c in ok:
        c["summary"]["empty_frame_rate"] = c["empty_pred_frames"] / max(c["num_frames"], 1)
    summary = mean_over_clips([c["summary"] for c in ok])
    if n_boot <= 0 or not ok:
        return summary, {}
    ids = sorted({c["sample_id"] for c in ok})
    picks = clip_picks(len(ids), n_boot, seed)
    ci = {}
    for k in summary:
        vals = np.zeros((len(ids), 2))
        for c in ok:
            v = float(c["summary"].get(k, math.nan))
            if not math.isnan(v):
                vals[ids.index(c["sample_id"])] += (v, 1.0)
        ci[k] = clip_interval(vals, picks)
    return summary, ci


def evaluate_models(cfg: EvaluateConfig, info, clips: list[Clip], models: list[tuple[ModelRef, str, Any]],
                    preview_dir: str = "") -> list[Evaluation]:
    """Every clip: rebuild its ground truth once, predict with each model, score. Error rows on
    failure. The first cfg.output.previews clips of each model are written under preview_dir."""
    from jobs.runtime import hms
    from pipelines.errors import AssetError

    from pipelines import metrics

    gt_builder = GroundTruth(dataset_config(info.manifest, cfg.data.source_path))
    gt_samples: dict[str, list] = {}  # sample_id -> per frame (samples, tree), for the conditioning gap
    gt_builder.prepare([c.uid for c in clips])
    evals = [Evaluation(ref, role) for ref, role, _ in models]
    params = {"seed": cfg.seed, "steps": cfg.steps, "mesh_resolution": cfg.mesh_resolution}
    videos: dict[str, np.ndarray] = {}
    shard = None
    t_start = time.time()
    for i, clip in enumerate(clips, start=1):
        if clip.shard != shard:  # clips are in shard order: each shard's videos are read once
            shard = clip.shard
            videos = read_videos(info, shard, {c.sample_id for c in clips if c.shard == shard})
        t0 = time.time()
        gt = None
        try:
            gt = gt_builder.frames(clip)
        except AssetError as e:
            err = (e.stage, e.reason, e.detail)
        except Exception:
            err = ("ground_truth", "internal_error", traceback.format_exc())
            log.error("ground truth of %s failed:\n%s", clip.sample_id, err[2])
        gt_s = time.time() - t0
        if gt is not None and cfg.gap_points:
            pts = [metrics.sample_points(v, f, cfg.gap_points, cfg.metrics.seed + 1) for v, f in gt]
            gt_samples[clip.sample_id] = [(p, None if p is None else metrics.nn_tree(p)) for p in pts]
        status = []
        for ev, (ref, _, model) in zip(evals, models):
            for draw in range(max(cfg.seeds, 1)):  # every clip has an entry per draw, ok or error
                seed = cfg.seed + (i - 1) + draw * len(clips)
                if gt is None:
                    ev.clips.append({**_error_row(clip, *err), "seed": seed, "draw": draw})
                    continue
                status.append(_evaluate_draw(cfg, ev, ref, model, clip, gt, gt_s, videos[clip.sample_id],
                                             {**params, "seed": seed}, draw, preview_dir))
            if gt is None:
                status.append(f"{ref.label}: error {err[0]}/{err[1]}")
        elapsed = time.time() - t_start
        log.info("[%d/%d %3.0f%%] %s: ground truth %.1f s | %s | elapsed %s, ETA %s", i, len(clips), 100 * i / len(clips),
                 clip.sample_id, gt_s, "; ".join(status), hms(elapsed), hms(elapsed / i * (len(clips) - i)))
    for ev in evals:
        conditioning_gaps(ev, gt_samples, cfg.metrics.workers)
        ev.summary, ev.summary_ci = summarize(ev.clips, cfg.bootstrap, cfg.seed)
    return evals


def conditioning_gaps(ev: Evaluation, gt_samples: dict[str, list], workers: int = 1) -> None:
    """Each ok entry's `chamfer_other_clips` (mean over the OTHER clips j of the frame-by-frame
    Chamfer of its prediction to clip j's ground truth) and `conditioning_gap` (that minus the
    same Chamfer to its own clip's ground truth), on gap_points samples per frame. A model that
    ignores its video makes the same shape for every clip: gap ~ 0."""
    from pipelines import metrics

    ids = sorted(gt_samples)
    if len(ids) < 2:
        return
    clips = [gt_samples[i] for i in ids]
    for c in ev.clips:
        pred = ev.samples.get((c["sample_id"], c.get("draw", 0)))
        if c["status"] != "ok" or pred is None or c["sample_id"] not in gt_samples:
            continue
        cds = metrics.frame_chamfers(pred, clips, workers)
        own = ids.index(c["sample_id"])
        others = np.delete(cds, own)
        others = others[~np.isnan(others)]
        if math.isnan(cds[own]) or not len(others):
            continue
        c["summary"]["chamfer_other_clips"] = float(others.mean())
        c["summary"]["conditioning_gap"] = float(others.mean() - cds[own])


def report(ev: Evaluation, cfg: EvaluateConfig, info, proto: dict, proto_digest: str) -> tuple[dict, str]:
    """(metrics.json content, metrics.csv text)."""
    doc = {
        "model": dataclasses.asdict(ev.model), "role": ev.role,
        "dataset": {"path": info.uri, "digest": info.digest, "name": info.manifest.get("name")},
        "split": cfg.split, "protocol": proto_digest, "protocol_spec": proto,
        "seeds_per_clip": max(cfg.seeds, 1),
        "clips_total": len(ev.clips), "clips_evaluated": ev.evaluated, "clips_failed": ev.failed,
        "summary": ev.summary, "summary_ci": ev.summary_ci, "clips": ev.clips,
    }
    keys = sorted({k for c in ev.clips for k in c.get("summary", {})})
    head = ["sample_id", "uid", "animation_index", "clip_index", "seed", "draw", "status", "error_stage", "error_reason",
            "num_frames", "gt_faces_mean", "pred_faces_mean", "empty_pred_frames", *keys,
            "ground_truth_s", "generate_s", "metrics_s", "error_detail"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, head, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for c in ev.clips:
        w.writerow({**{k: v for k, v in c.items() if k != "summary"}, **c.get("summary", {})})
    return _finite_or_none(doc), buf.getvalue()


def record(ev: Evaluation, cfg: EvaluateConfig, info, proto_digest: str, exp_id: str, doc: dict, table: str) -> str:
    """The evaluation run, and the eval.<split>.* tags on the model version; returns the run id."""
    import mlflow
    from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from jobs.runtime import code_version

    client = mlflow.MlflowClient()
    run_name = f"eval-{ev.model.name}-v{ev.model.version}-{cfg.split}" if ev.model.name else f"eval-{cfg.split}"
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        tracking.log_params({
            "model.uri": ev.model.uri, "model.load_uri": ev.model.load_uri, "model.name": ev.model.name,
            "model.version": ev.model.version, "dataset.digest": info.digest, "dataset.path": info.uri,
            "split": cfg.split, "limit": cfg.limit, "seed": cfg.seed, "seeds": cfg.seeds, "bootstrap": cfg.bootstrap,
            "steps": cfg.steps,
            "mesh_resolution": cfg.mesh_resolution, "protocol": proto_digest,
            **{f"metrics.{k}": v for k, v in config_lib.to_dict(cfg.metrics).items()},
        })
        mlflow.set_tags({
            "shapegen4d.kind": "evaluation", "eval.role": ev.role, "eval.split": cfg.split,
            "eval.protocol": proto_digest, "eval.complete": str(ev.complete).lower(),
            "eval.summary": json.dumps(ev.summary), "eval.summary_ci": json.dumps(ev.summary_ci),
            "model.uri": ev.model.uri, "model.name": ev.model.name,
            "model.version": ev.model.version, "model.run_id": ev.model.run_id, "dataset.digest": info.digest,
            "dataset.path": info.uri, "code.git": code_version()["git"],
        })
        finite = {k: v for k, v in ev.summary.items() if math.isfinite(v)}
        finite.update({f"{k}_ci_{end}": v for k, (lo, hi) in ev.summary_ci.items()
                       for end, v in (("low", lo), ("high", hi)) if math.isfinite(v)})
        mlflow.log_metrics({**finite, "clips_total": len(ev.clips), "clips_evaluated": ev.evaluated,
                            "clips_failed": ev.failed})
        for step, c in enumerate(ev.clips):
            per = {f"clip.{k}": v for k, v in c.get("summary", {}).items() if math.isfinite(v)}
            if per:
                mlflow.log_metrics(per, step=step)
        mlflow.log_dict(doc, "metrics.json")
        mlflow.log_text(table, "metrics.csv")
        for sample_id, folder in ev.previews.items():
            mlflow.log_artifacts(folder, f"previews/{sample_id.replace(':', '_')}")
        local = [c for c in get_registered_sources() if c.__name__ == "LocalArtifactDatasetSource"][:1]
        source = resolve_dataset_source(info.uri, candidate_sources=local if "://" not in info.uri else None)
        mlflow.log_input(MetaDataset(source, name=info.manifest.get("name", "dataset"), digest=info.digest), context="evaluation")
    if ev.model.name:
        pre = f"eval.{cfg.split}."
        tags = {**{pre + k: repr(float(v)) for k, v in ev.summary.items()},
                pre + "summary_ci": json.dumps(ev.summary_ci),
                pre + "run_id": run.info.run_id, pre + "dataset_digest": info.digest, pre + "protocol": proto_digest,
                pre + "clips": f"{ev.evaluated}/{len(ev.clips)}", pre + "clips_failed": str(ev.failed)}
        for k, v in tags.items():
            client.set_model_version_tag(ev.model.name, ev.model.version, k, v)
    return run.info.run_id


def _write(cfg_path: str, rel: str, data: bytes) -> str:
    from pipelines import shards

    out = shards.Output(cfg_path)
    out.check_writable()
    out.write_bytes(rel, data)
    return f"{out.uri.rstrip('/')}/{rel}"


@dataclass
class Result:
    evaluations: list[Evaluation]
    decision: dict  # {} without promote; else decision, reason, alias, champion_before
    files: list[str]
    wall_s: float

    def text(self) -> str:
        cand = self.evaluations[0]
        lines = [f"evaluated {cand.model.label} on {cand.evaluated}/{len(cand.clips)} clips in {self.wall_s:.0f} s; "
                 f"MLflow run {cand.run_id}"]
        lines.append("  " + ", ".join(f"{k} {registry.fmt(v)}" + (f" [{registry.fmt(cand.summary_ci[k][0])}, "
                                                                   f"{registry.fmt(cand.summary_ci[k][1])}]"
                                                                   if k in cand.summary_ci else "")
                                      for k, v in cand.summary.items()))
        for ev in self.evaluations[1:]:
            lines.append(f"  champion {ev.model.label} evaluated too (run {ev.run_id}): " +
                         ", ".join(f"{k} {registry.fmt(v)}" for k, v in ev.summary.items()))
        for c in cand.clips:
            if c["status"] != "ok":
                lines.append(f"  error {c['sample_id']}: {c['error_stage']}/{c['error_reason']}: {c['error_detail'].splitlines()[0][:300]}")
        lines += [f"  {f}" for f in self.files]
        if self.decision:
            lines.append(f"  promotion: {self.decision['decision']}: {self.decision['reason']}")
        return "\n".join(lines)


def main(cfg: EvaluateConfig) -> Result:
    import mlflow

    from jobs import ingest

    t0 = time.time()
    info = ingest.open_dataset(cfg.data.path)
    # The shards list_clips and the evaluation read.
    ingest.verify_shards(info.uri, info.manifest, split_shards(info, cfg.split, cfg.limit), enabled=cfg.data.verify_sha256)
    clips = list_clips(info, cfg.split, cfg.limit)
    if not clips:
        raise EvaluationError(f"split {cfg.split!r} of {info.uri} has no rows (splits: {info.manifest.get('splits')})")
    proto, proto_digest = protocol(cfg, info.digest, clips)
    uri = tracking.tracking_uri(cfg.mlflow)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    cand = resolve_model(cfg.model, client)

    # Promotion pre-checks, before any work: what to compare against, and whether we can.
    champ, champ_summary, champ_from = None, None, ""
    if cfg.promote:
        if not cand.name:
            raise EvaluationError(f"promote=true needs a registered model version (models:/name@alias or "
                                  f"models:/name/<version>), got {cfg.model}")
        valid = summary_keys(cfg.metrics, info.dims["T"]) + (GAP_KEYS if cfg.gap_points else [])
        if cfg.promote_metric not in valid:
            raise EvaluationError(f"promote_metric {cfg.promote_metric!r} is not a summary metric of this "
                                  f"protocol; choose one of {valid}")
        champ = current_champion(client, cand.name, cfg.champion_alias)
        if champ is not None and champ.version != cand.version:
            champ_summary, champ_from = _champion_value(client, cfg, champ, proto_digest)
            if champ_summary is None and not cfg.evaluate_champion:
                raise EvaluationError(
                    f"champion {champ.label} has no complete evaluation of this protocol ({proto_digest}: dataset "
                    f"{info.digest}, split {cfg.split}, same clips/metric config/generation params); evaluate it "
                    f"first (python -m jobs.evaluate model={champ.load_uri} ...) or set evaluate_champion=true")

    exp_id = tracking.experiment(cfg.mlflow.experiment, uri)
    models = [(cand, "candidate", load_model(cand))]
    if champ is not None and champ.version != cand.version and champ_summary is None:
        log.info("champion %s has no complete evaluation of protocol %s: evaluating it too", champ.label, proto_digest)
        models.append((champ, "champion", load_model(champ)))
    log.info("evaluating %s on %d %s clip(s) of %s (digest %s, protocol %s); MLflow %s", " and ".join(m[0].label for m in models),
             len(clips), cfg.split, info.uri, info.digest, proto_digest, uri)
    files = []
    with tempfile.TemporaryDirectory(prefix="shapegen4d-previews-") as preview_dir:
        evals = evaluate_models(cfg, info, clips, models, preview_dir)
        for ev in evals:
            doc, table = report(ev, cfg, info, proto, proto_digest)
            base = cfg.output.path if ev.role == "candidate" else f"{cfg.output.path.rstrip('/')}/champion-{ev.model.name}-v{ev.model.version}"
            files.append(_write(base, "metrics.json", json.dumps(doc, indent=2, allow_nan=False).encode()))
            files.append(_write(base, "metrics.csv", table.encode()))
            ev.run_id = record(ev, cfg, info, proto_digest, exp_id, doc, table)
    ev = evals[0]
    if ev.evaluated == 0:
        raise EvaluationError(f"no clip of {cfg.split!r} could be evaluated ({ev.failed} error rows in {files[0]}); first: "
                              f"{ev.clips[0]['error_stage']}/{ev.clips[0]['error_reason']}: {ev.clips[0]['error_detail'][:500]}")

    decision: dict = {}
    if cfg.promote:
        if len(evals) > 1:
            champ_summary, champ_from = (evals[1].summary if evals[1].complete else None), f"evaluation run {evals[1].run_id}"
        decision = promote(client, cfg, ev, champ, champ_summary, champ_from)
    result = Result(evals, decision, files, time.time() - t0)
    print(result.text(), flush=True)
    if decision.get("decision") == "refused":
        raise EvaluationError(f"promotion refused: {decision['reason']}")
    return result


def promote(client, cfg: EvaluateConfig, ev: Evaluation, champ: ModelRef | None, champ_summary: dict | None,
            champ_from: str) -> dict:
    """Decide and record: move the alias only on a win (see `decide`)."""
    metric, alias = cfg.promote_metric, cfg.champion_alias
    value = ev.summary.get(metric, math.nan)
    if champ is not None and champ.version == ev.model.version:
        moved, reason, what = False, f"{ev.model.label} already holds alias {alias!r} ({metric} {registry.fmt(value)})", "kept"
    elif not ev.complete:
        moved, reason, what = False, (f"incomplete evaluation: {ev.failed} of {len(ev.clips)} clips failed; promotion "
                                      "compares complete evaluations only"), "refused"
    elif champ is not None and champ_summary is None:
        moved, reason, what = False, f"champion {champ.label}'s evaluation of this protocol is incomplete", "refused"
    elif champ is not None and metric not in champ_summary:
        moved, reason, what = False, f"champion {champ.label}'s evaluation has no {metric}", "refused"
    else:
        moved, reason = decide(value, None if champ is None else champ_summary[metric], cfg.promote_mode,
                               cfg.promote_min_delta, metric)
        if champ is not None:
            reason += f"; champion {champ.label} from {champ_from}"
        what = "promoted" if moved else "kept"
    if moved:
        client.set_registered_model_alias(ev.model.name, alias, ev.model.version)
    before = champ.version if champ else ""
    tags = {"promotion.decision": what, "promotion.reason": reason, "promotion.alias": alias,
            "promotion.run_id": ev.run_id, "promotion.champion_before": before}
    for k, v in tags.items():
        client.set_model_version_tag(ev.model.name, ev.model.version, k, v[:5000])
    client.set_tag(ev.run_id, "promotion.decision", what)
    client.set_tag(ev.run_id, "promotion.reason", reason[:5000])
    (log.info if what != "refused" else log.error)("promotion of %s to %r: %s: %s", ev.model.label, alias, what, reason)
    return {"decision": what, "reason": reason, "alias": alias, "champion_before": before}


if __name__ == "__main__":
    config_lib.run_job(main, EvaluateConfig, __doc__)
