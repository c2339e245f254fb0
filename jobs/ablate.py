"""The paper's ablation table at small scale: `python -m jobs.ablate --config jobs/configs/ablate.yaml [key=value ...]`.

    python -m jobs.ablate --config jobs/configs/ablate.yaml                 # ~1.7 h on 2 CPU cores
    python -m jobs.ablate --config jobs/configs/ablate.yaml finetune.train.steps=400 output_path=out/abl-long

One command, every stage the real job's `main` (so each resumes or skips what it finished):
1. dataset: `jobs.build_dataset` with `dataset` (the procedural 4D source by default); a variant
   with dataset overrides (independent queries) gets its own dataset of the same assets.
2. base: `jobs.pretrain_base` on the train split: the frozen 3D prior every variant shares.
3. fine-tune: `jobs.train` once per variant, from that base, each registered as
   `name`@<variant>. Variants that differ from another only in sampling keys (`SAMPLING_KEYS`:
   the flow's time shift, steps, guidance, sigma grid, first step) reuse its trained S-T weights,
   packed with their own spec. A variant with `untrained: true` is not fine-tuned: the base's
   zero-initialised S-T layers under its spec (`st-untrained`: ShapeGen4D's sampling, shared
   noise and time shift, on the base alone), so the table shows what the trained layers add.
4. per-frame base baseline: the same base with zero S-T layers (which makes ShapeGen4D exactly
   the per-frame base) and independent noise per frame: what running the 3D model frame by
   frame gives.
5. evaluation: `jobs.evaluate` of every variant and the baseline on the same test clips of the
   aligned dataset (same protocol digest, so the rows compare). With `train_seeds=N` every trained
   variant is fine-tuned N times (train.seed + k, registered as <variant>-s<k>) and its row pools
   the N evaluations: intervals and paired shares then resample runs as well as clips, so they
   cover the training's own noise. With `base_seeds=M` the whole chain after the datasets runs on
   M bases (pretrain seeds + j; runs <variant>-b<j>[-s<k>]): the resampling draws bases, then runs
   within each, then clips, so the intervals cover the base's noise as well.
6. report: <output_path>/ablation.md + ablation.csv (one row per variant: its switches and the
   metrics, the layout of the paper's ablation table), chamfer_over_time.png (mean per-frame
   Chamfer over the clip per variant), ablation.json (everything); all logged to one MLflow
   run in `mlflow.experiment`.

Progress is journalled in <output_path>/ablation.json after every stage, keyed by a digest of the
stage's inputs: a re-run continues where it stopped, and a re-run with a changed config redoes only
the stages whose inputs changed (more fine-tuning steps reuse the datasets and the base; another
metric config reuses the trained models). Exit status: 0 done, 1 could not run, 2 bad config key.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from jobs import build_dataset, components, evaluate, pretrain_base, registry, tracking, train
from jobs import config as config_lib
from jobs.build_dataset import DatasetJobConfig
from jobs.evaluate import EvaluateConfig
from jobs.pretrain_base import PretrainConfig
from jobs.registry import RegistryConfig
from jobs.runtime import RayConfig, hms
from jobs.tracking import MlflowConfig
from jobs.train_config import TrainConfig
from pipelines.config import DatasetConfig

log = logging.getLogger("shapegen4d.ablate")
JOURNAL = "ablation.json"
# Keys of the training config that only change sampling: variants differing only here share a run.
SAMPLING_KEYS = ("model.flow.time_shift", "model.flow.steps", "model.flow.guidance", "model.flow.sigma_grid",
                 "model.flow.zero_first_step", "sample.")


@dataclass
class Variant:
    name: str  # row id and registry alias: letters, digits, '-'
    label: str  # row label in the table
    dataset: list[str] = field(default_factory=list)  # dataset overrides (a.b=value): its own dataset
    train: list[str] = field(default_factory=list)  # training overrides
    # No fine-tuning: the frozen base with its zero-initialised S-T layers, under this variant's spec
    # (sampling switches apply). Against `full` it shows what the trained S-T layers add at all.
    untrained: bool = False


def paper_variants() -> list[Variant]:
    return [
        Variant("full", "ShapeGen4D (full)"),
        Variant("independent-queries", "w/o aligned queries (FPS per frame)", dataset=["queries.mode=independent"]),
        Variant("independent-noise", "w/o shared noise", train=["model.flow.shared_noise=false"]),
        Variant("temporal-only", "1D temporal attention only", train=["model.st.temporal_only=true"]),
        Variant("no-image-tokens", "S-T layers w/o image tokens", train=["model.st.use_image_tokens=false"]),
        Variant("no-time-shift", "w/o time shift (s = 1)", train=["model.flow.time_shift=1.0"]),
    ]


def official_switch_variants() -> list[Variant]:
    """The full method with one of the base's official conventions (model/flow.py) switched off."""
    return [
        Variant("uniform-loss", "uniform velocity loss (official: sigma^2-weighted)",
                train=["model.flow.loss_weighting=uniform"]),
        Variant("linear-grid", "linear sigma grid (official: linspace(1, 0.001, N), then 0)",
                train=["model.flow.sigma_grid=linear"]),
        Variant("first-step-kept", "first step's velocity kept (official: zeroed)",
                train=["model.flow.zero_first_step=false"]),
        Variant("no-recenter", "frames not recentred (official: one box per clip at 0.95 of the frame)",
                train=["model.condition.recenter=false"]),
        Variant("bilinear-resize", "bilinear resize (official: bicubic)", train=["model.condition.resize=bilinear"]),
    ]


@dataclass
class AblateConfig:
    name: str = "shapegen4d-ablation"  # registered model of the variants, run-name prefix, MLflow run name
    output_path: str = "out/ablation"  # datasets/, base/, runs/, eval/ and the table go under it
    # Every sub-job's store (each logs to its own experiment); the table's run goes to `experiment`.
    mlflow: MlflowConfig = field(default_factory=lambda: MlflowConfig(experiment="shapegen4d-ablations"))
    ray: RayConfig = field(default_factory=RayConfig)  # every sub-job's Ray
    # The sub-jobs' own configs. Their paths, tracking store, Ray, names and the base they share are
    # set by this job (the `*_cfg` functions below): leave those keys at their defaults.
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluateConfig = field(default_factory=EvaluateConfig)
    variants: list[Variant] = field(default_factory=lambda: paper_variants() + official_switch_variants() + [
        Variant("st-untrained", "S-T layers untrained (the base, sampled as ShapeGen4D)", untrained=True)])
    baseline: bool = True  # also evaluate the per-frame base
    # Fine-tune every trained row this many times, run k with train.seed = finetune.train.seed + k
    # (registered as <variant>-s<k>); the row's metrics, intervals and paired shares pool its runs,
    # so they cover the training's own noise, not only the test clips'. 1 = one run per row.
    train_seeds: int = 1
    # Pretrain this many bases, base j with pretrain.seed + j and pretrain.model.base.seed + j (the
    # weights' and the tiny condition encoder's init), and run every row on each (runs
    # <variant>-b<j>[-s<k>]); rows pool them and their intervals resample bases, then runs within a
    # base, then clips, so they cover which base instance the table was measured on. 1 = one base.
    base_seeds: int = 1
    metric: str = "chamfer_aligned"  # the table gives each row's difference to `full` in this summary metric
    # The rows every other row is paired with, one table each: variant names ("per-frame-base" for
    # the baseline). Another row than full asks e.g. whether a new row beats 1D attention.
    paired_with: list[str] = field(default_factory=lambda: ["full"])


# ------------------------------------------------------------------------------- sub-configs


def derived(cfg: AblateConfig) -> dict[str, tuple]:
    """(given, default) of every sub-config part that the `*_cfg` functions set."""
    f, p, e = cfg.finetune, cfg.pretrain, cfg.evaluation
    F, P, E = TrainConfig(), PretrainConfig(), EvaluateConfig()
    return {
        "dataset.output.path": (cfg.dataset.output.path, DatasetConfig().output.path),
        "pretrain.data_path": (p.data_path, P.data_path), "pretrain.split": (p.split, P.split),
        "pretrain.output_path": (p.output_path, P.output_path), "pretrain.mlflow": (p.mlflow, P.mlflow),
        "finetune.data.path": (f.data.path, F.data.path), "finetune.model.base": (f.model.base, F.model.base),
        "finetune.model.condition": (f.model.condition, F.model.condition), "finetune.run.name": (f.run.name, F.run.name),
        "finetune.run.storage_path": (f.run.storage_path, F.run.storage_path), "finetune.ray": (f.ray, F.ray),
        "finetune.mlflow": (f.mlflow, F.mlflow), "finetune.registry": (f.registry, F.registry),
        "evaluation.model": (e.model, E.model), "evaluation.data.path": (e.data.path, E.data.path),
        "evaluation.output.path": (e.output.path, E.output.path), "evaluation.mlflow": (e.mlflow, E.mlflow),
    }


def check_config(cfg: AblateConfig) -> None:
    """Derived parts must be left at their defaults; variants must be distinct and nameable."""
    for key, (given, default) in derived(cfg).items():
        if given != default:
            raise config_lib.ConfigError(f"{key} is set by jobs.ablate (from output_path, mlflow, ray, name and the "
                                         f"pretrained base); leave it out of the config")
    names = [v.name for v in cfg.variants]
    if len(set(names)) != len(names) or "per-frame-base" in names:
        raise config_lib.ConfigError(f"variant names must be unique and not 'per-frame-base': {names}")
    for v in cfg.variants:
        if not v.name or not all(c.isalnum() or c == "-" for c in v.name):
            raise config_lib.ConfigError(f"variant name {v.name!r}: use letters, digits and '-' (it is a registry alias)")
    for key in ("train_seeds", "base_seeds"):
        if getattr(cfg, key) < 1:
            raise config_lib.ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.train_seeds > 1:
        seeded = [v.name for v in cfg.variants if any(a.startswith("train.seed=") for a in v.train)]
        if seeded:
            raise config_lib.ConfigError(f"variants {seeded} set train.seed, which train_seeds > 1 sets per run")
    unknown = sorted(set(cfg.paired_with) - set(names) - ({PER_FRAME.name} if cfg.baseline else set()))
    if unknown:
        raise config_lib.ConfigError(f"paired_with {unknown}: no such row (the rows: {names}"
                                     f"{' and per-frame-base' if cfg.baseline else ''})")
    runs = [r.variant.name for v in [*cfg.variants, PER_FRAME] for r in replicas(cfg, v)]
    if len(set(runs)) != len(runs):
        raise config_lib.ConfigError(f"with train_seeds={cfg.train_seeds}, base_seeds={cfg.base_seeds} the runs' "
                                     f"names collide: {runs}")


def _store(sub: MlflowConfig, uri: str) -> MlflowConfig:
    """A sub-job's own experiment, in the ablation's store."""
    return replace(sub, tracking_uri=uri)


def dataset_cfg(cfg: AblateConfig, uri: str, overrides: list[str]) -> tuple[DatasetJobConfig, str]:
    """(job config, stage key) of one dataset; its folder is named by what it contains."""
    d = config_lib.apply(cfg.dataset, overrides)
    key = key_of(build_dataset.content_config(d))
    name = f"{'+'.join(overrides).replace('/', '_') or 'aligned'}-{key}"
    d = replace(d, output=replace(d.output, path=str(Path(cfg.output_path).resolve() / "datasets" / name)))
    job = DatasetJobConfig(**build_dataset.dataset_sections(d), ray=cfg.ray)
    return replace(job, mlflow=_store(job.mlflow, uri)), name


def pretrain_cfg(cfg: AblateConfig, uri: str, data_path: str, j: int = 0) -> tuple[PretrainConfig, str]:
    """(config, stage key) of shared base j (base_seeds): its batches, flow noise and init seeded
    + j; named by what it is trained from and how."""
    p = replace(cfg.pretrain, data_path=data_path, split=cfg.finetune.data.split, seed=cfg.pretrain.seed + j,
                model=base_model(cfg, j))
    key = key_of(p)
    return replace(p, output_path=str(Path(cfg.output_path).resolve() / f"base-{key}"), mlflow=_store(p.mlflow, uri)), key


def base_model(cfg: AblateConfig, j: int) -> components.ModelConfig:
    """Base j's model config: its init seed (of the weights, and of the tiny random condition
    encoder and the S-T layers, which fine-tuning must rebuild alike) + j."""
    m = cfg.pretrain.model
    return replace(m, base=replace(m.base, seed=m.base.seed + j))


def train_cfg(cfg: AblateConfig, uri: str, overrides: list[str], data_path: str, base: dict, alias: str,
              j: int = 0) -> TrainConfig:
    """The fine-tuning of one variant: pretrained base j (`base`: pretrain_base's result) and the
    condition encoder it was trained with, both frozen."""
    f, p = cfg.finetune, base_model(cfg, j)
    t = replace(f, data=replace(f.data, path=data_path),
                model=replace(f.model, base=replace(p.base, checkpoint=base["output"]),
                              condition=replace(p.condition, model=base["condition"])),
                run=replace(f.run, storage_path=str(Path(cfg.output_path).resolve() / "runs")),
                ray=cfg.ray, mlflow=_store(f.mlflow, uri), registry=RegistryConfig(cfg.name, alias))
    t = config_lib.apply(t, overrides)
    # One run per distinct training: named by its inputs, so a changed config trains anew.
    return replace(t, run=replace(t.run, name=f"{cfg.name}-{key_of(t)}"))


def evaluate_cfg(cfg: AblateConfig, uri: str, model_version: str, data_path: str, row: str) -> tuple[EvaluateConfig, str]:
    e = cfg.evaluation
    e = replace(e, model=f"models:/{cfg.name}/{model_version}", data=replace(e.data, path=data_path),
                mlflow=_store(e.mlflow, uri))
    key = key_of(e, evaluate.extraction())  # a new mesh extraction evaluates every row again
    return replace(e, output=replace(e.output, path=str(Path(cfg.output_path).resolve() / "eval" / f"{row}-{key}"))), key


def split_overrides(variant: Variant) -> tuple[list[str], list[str]]:
    """(overrides that change the trained weights, sampling-only overrides) of a variant."""
    sampling = [a for a in variant.train if a.split("=")[0].startswith(SAMPLING_KEYS)]
    return [a for a in variant.train if a not in sampling], sampling


@dataclass
class Run:
    """One run of a row: `variant` under the run's name and overrides, on base `base` (base_seeds),
    fine-tuned with train.seed + `seed` (None: untrained, no training noise)."""
    variant: Variant
    base: int = 0
    seed: int | None = 0


# The per-frame base baseline's row: the base's zero S-T layers (its spec is set by per_frame_base).
PER_FRAME = Variant("per-frame-base", "per-frame base (no S-T layers)", untrained=True)


def replicas(cfg: AblateConfig, variant: Variant) -> list[Run]:
    """The runs of a row, base by base: on base j (suffix -b<j> for j > 0), the variant, then
    `-s<k>` fine-tuned with train.seed + k for k < train_seeds (the names a variant of that name
    and seed override would have, so a journal of such rows is reused). An untrained row has no
    training noise: one run per base."""
    seed, out = cfg.finetune.train.seed, []
    for j in range(cfg.base_seeds):
        name = variant.name + (f"-b{j}" if j else "")
        if variant.untrained:
            out.append(Run(replace(variant, name=name), j, None))
            continue
        out += [Run(replace(variant, name=name + (f"-s{k}" if k else ""),
                            train=[*variant.train, f"train.seed={seed + k}"] if k else variant.train), j, k)
                for k in range(cfg.train_seeds)]
    return out


def switches(variant: Variant | None, time_shift: float) -> dict:
    """The table's component columns of a variant (None = the per-frame base)."""
    if variant is None:
        return {"aligned queries": "-", "shared noise": "no", "S-T attention": "none (per frame)",
                "image tokens": "-", "time shift": "1 (official)"}
    d = dict(config_lib.parse_override(a) for a in variant.dataset)
    t = dict(config_lib.parse_override(a) for a in variant.train)
    mark = lambda ok: "yes" if ok else "no"  # noqa: E731
    attn = "1D temporal" if t.get("model.st.temporal_only") else "spatio-temporal"
    attn += " (untrained)" if variant.untrained else ""
    return {"aligned queries": mark(d.get("queries.mode", "aligned") == "aligned"),
            "shared noise": mark(t.get("model.flow.shared_noise", True)), "S-T attention": attn,
            "image tokens": mark(t.get("model.st.use_image_tokens", True)),
            "time shift": f"{float(t.get('model.flow.time_shift', time_shift)):g}"}


# ---------------------------------------------------------------------------------- journal


class Journal:
    """<output_path>/ablation.json: what each finished stage produced, keyed by the digest of the
    stage's inputs, so a re-run skips every stage whose inputs did not change (a longer
    fine-tuning reuses the datasets and the base; a new metric config reuses the trained models)."""

    def __init__(self, root: Path):
        self.path = root / JOURNAL
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}, "wall_s": {}}

    def get(self, key: str):
        return self.data["stages"].get(key)

    def put(self, key: str, value, wall_s: float) -> None:
        self.data["stages"][key] = value
        self.data["wall_s"][key] = wall_s
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, allow_nan=True))
        tmp.replace(self.path)


def key_of(*parts) -> str:
    """Short digest of a stage's inputs (configs, paths, override lists). Config fields added later
    are left out at their old-behaviour default (`config_lib.later`): a new switch redoes nothing."""
    return config_lib.digest(list(parts))[:12]


# ---------------------------------------------------------------------------------- stages


def _register(cfg: AblateConfig, tcfg: TrainConfig, data_path: str, weights: Path, alias: str, tags: dict,
              run_id: str | None = None) -> dict:
    """Pack S-T `weights` under the spec of `tcfg` and register it as `cfg.name`@`alias`, logged in
    run `run_id` (None = a new run in the ablation experiment)."""
    import mlflow

    from jobs import ingest

    spec = train.make_spec(tcfg, ingest.open_dataset(data_path))
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.pack(Path(tmp) / "model", spec, weights, tcfg.sample, tags)
        exp_id = None if run_id else tracking.experiment(cfg.mlflow.experiment, mlflow.get_tracking_uri())
        with mlflow.start_run(run_id=run_id, experiment_id=exp_id, run_name=None if run_id else f"{cfg.name}-{alias}"):
            if run_id is None:
                mlflow.set_tags({"shapegen4d.kind": "baseline", "base.checkpoint": tcfg.model.base.checkpoint})
            return registry.log_and_register(folder, RegistryConfig(cfg.name, alias), tags)


def untrained(cfg: AblateConfig, tcfg: TrainConfig, data_path: str, alias: str, tags: dict) -> dict:
    """Register the base with its zero-initialised S-T layers (ShapeGen4D == the frozen base, frame
    by frame) under the spec of `tcfg`: no fine-tuning."""
    from safetensors.torch import save_file

    from jobs import ingest

    comps = components.build(train.make_spec(tcfg, ingest.open_dataset(data_path)))
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / registry.ST_WEIGHTS
        save_file(components.cpu_state_dict(comps.model.trained_weights()), str(weights))
        return _register(cfg, tcfg, data_path, weights, alias, tags)


def per_frame_base(cfg: AblateConfig, tcfg: TrainConfig, data_path: str, alias: str = PER_FRAME.name) -> dict:
    """Register the per-frame baseline: the untrained S-T layers, sampled as the official base
    samples: independent noise per frame, no time shift."""
    tcfg = replace(tcfg, model=replace(tcfg.model, flow=replace(tcfg.model.flow, shared_noise=False, time_shift=1.0)))
    return untrained(cfg, tcfg, data_path, alias, {"baseline": "per-frame base"})


def repack(cfg: AblateConfig, tcfg: TrainConfig, variant: Variant, trained: dict, data_path: str) -> dict:
    """A sampling-only variant: the trained S-T weights of another variant, under this spec, logged
    in that training's run (its lineage applies)."""
    return _register(cfg, tcfg, data_path, Path(trained["checkpoint"]) / registry.ST_WEIGHTS, variant.name,
                     {"ablation.variant": variant.name, "weights_of_run": trained["run_id"]}, run_id=trained["run_id"])


def mean_per_frame(clips: list[dict], key: str) -> list[float]:
    """Per frame, the mean over clips of `key`, over the clips where it is finite (an empty
    predicted frame has CD inf: it is counted by `frame_stats` instead)."""
    rows = [c["per_frame"][key] for c in clips if c["status"] == "ok" and key in c.get("per_frame", {})]
    if not rows:
        return []
    out = []
    for t in range(min(len(r) for r in rows)):
        finite = [r[t] for r in rows if math.isfinite(r[t])]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def frame_stats(clips: list[dict], key: str = "chamfer_aligned") -> dict:
    """Share of empty predicted frames, and the mean of `key` over the non-empty ones: a row whose
    mean CD is inf (one empty frame suffices) still says how often and how well it works."""
    ok = [c for c in clips if c["status"] == "ok"]
    frames = sum(c["num_frames"] for c in ok)
    values = [x for c in ok for x in c["per_frame"].get(key, []) if math.isfinite(x)]
    return {"empty_frames": sum(c["empty_pred_frames"] for c in ok) / max(frames, 1),
            f"{key}_nonempty": sum(values) / len(values) if values else math.nan}


# ---------------------------------------------------------------------------------- report

COLUMNS = [("chamfer", "CD ↓"), ("chamfer_aligned", "CD aligned ↓"), ("chamfer_aligned_nonempty", "CD aligned, non-empty frames ↓"),
           ("empty_frames", "empty frames ↓"), ("fscore_aligned", "F@0.02 ↑"), ("iou_aligned", "IoU ↑"), ("jitter", "jitter ↓"),
           ("conditioning_gap", "cond. gap ↑")]


def table(rows: list[dict], metric: str) -> tuple[str, str]:
    """(markdown, csv) of the ablation rows, the full method first."""
    sw = list(rows[0]["switches"])
    full = next((r for r in rows if r["variant"] == "full"), rows[0])
    ref = full["summary"].get(metric, math.nan)
    head = ["variant", *sw, *(c for _, c in COLUMNS), f"Δ {metric} vs {full['variant']}"]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        s = r["summary"]
        delta = s.get(metric, math.nan) - ref
        md.append("| " + " | ".join([r["label"], *(r["switches"][k] for k in sw),
                                      *(_num(s.get(k, math.nan)) + _ci(r.get("summary_ci", {}).get(k)) for k, _ in COLUMNS),
                                      "—" if r is full else (f"{delta:+.4f}" if math.isfinite(delta) else "n/a")]) + " |")
    keys = sorted({k for r in rows for k in r["summary"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "label", *sw, *keys, "clips", "model"])
    for r in rows:
        w.writerow([r["variant"], r["label"], *(r["switches"][k] for k in sw),
                    *(r["summary"].get(k, "") for k in keys), r["clips"], r["model"]])
    return "\n".join(md) + "\n", buf.getvalue()


# (metric, lower is better) of the paired comparisons with the full method
PAIRED = [("chamfer_aligned", True), ("jitter", True), ("fscore_aligned", False), ("iou_aligned", False)]


def run_clip_picks(bases: list[int], n_clips: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """[n_boot, n_runs * n_clips] indices into (run, clip) cells stored run-major, `bases[r]` the
    base of run r: each resample draws the bases, then as many runs within each drawn base, then
    the clips, all with replacement and crossed, as each is a sample (of the base's noise, the
    training's, the data). Bases must hold equally many runs. With one base the runs are drawn
    flat; with one run it is `evaluate.clip_picks`."""
    groups = [np.flatnonzero(np.asarray(bases) == b) for b in sorted(set(bases))]
    if len({len(g) for g in groups}) != 1:
        raise ValueError(f"every base needs equally many runs: {bases}")
    runs_GS = np.stack(groups)
    G, S = runs_GS.shape
    rng = np.random.default_rng([seed, 1])
    bases_BG = rng.integers(0, G, size=(n_boot, G)) if G > 1 else np.zeros((n_boot, 1), dtype=int)
    runs_BR = runs_GS[bases_BG[..., None], rng.integers(0, S, size=(n_boot, G, S))].reshape(n_boot, G * S)
    clips_BC = evaluate.clip_picks(n_clips, n_boot, seed)
    return (runs_BR[:, :, None] * n_clips + clips_BC[:, None, :]).reshape(n_boot, -1)


def _read_csv(path: str, key: str) -> dict[tuple[str, str], float]:
    """(sample_id, draw) -> `key` of the ok entries of an evaluation's metrics.csv."""
    with open(path, newline="") as f:
        return {(r["sample_id"], r["draw"]): float(r[key]) for r in csv.DictReader(f)
                if r["status"] == "ok" and r.get(key, "") not in ("", "nan")}


def pairs_of(full_runs: list[dict], row_runs: list[dict]) -> list[tuple[dict, dict]]:
    """The runs to compare: on the same base, with the same training seed, or any seed of a run
    with none (untrained, the per-frame base: no training noise). Every run must find a partner."""
    pairs = [(a, b) for a in full_runs for b in row_runs if a["base"] == b["base"]
             and (a["seed"] == b["seed"] or None in (a["seed"], b["seed"]))]
    alone = [r for r in (*full_runs, *row_runs) if not any(r is a or r is b for a, b in pairs)]
    if alone:
        raise ValueError(f"cannot pair runs (base, seed) {[(r['base'], r['seed']) for r in alone]}: the other row has no "
                         "run on that base with that training seed")
    return pairs


def paired(full_runs: list[dict], row_runs: list[dict], key: str, lower_better: bool, n_boot: int, seed: int = 0,
           read=_read_csv) -> dict:
    """How often the full method beats a row on `key`, over the (run pair, clip, draw) triples both
    evaluated. Runs are {"base", "seed", "metrics_csv"}: one evaluation per fine-tuning run, paired
    by `pairs_of` (run k on base j with run k on base j; a row with one run per base, untrained or
    the per-frame base, with every run of full on that base). Every row draws clip i's k-th sample
    from the same seed, so pairs share their noise. A win scores 1, a tie 0.5 (two empty frames:
    both inf), a loss 0; the share of wins gets a 95% interval by resampling bases, runs and clips
    (`run_clip_picks`; each resample averages all draws of the cells it drew), so with several
    runs it covers the training's (and the base's) noise too. Unlike a mean difference it stays
    defined when empty frames make CD inf (an empty frame loses to any surface), and 0.5 outside
    the interval is significant. `median_diff`: the median over the pairs of row minus full in
    `key` (two infs: 0), how far apart the two rows' shapes are, not only which is ahead. `read`:
    (metrics.csv, key) -> entries, `_read_csv` or a cache of it."""
    pairs = pairs_of(full_runs, row_runs)
    wins, diffs = [], []  # per run pair: (sample_id, draw) -> 1 / 0.5 / 0; over all pairs: row minus full
    for run_a, run_b in pairs:
        a, b = read(run_a["metrics_csv"], key), read(run_b["metrics_csv"], key)
        wins.append({})
        for sid, draw in a.keys() & b.keys():
            x, y = (a[sid, draw], b[sid, draw]) if lower_better else (b[sid, draw], a[sid, draw])
            wins[-1][sid, draw] = 1.0 if x < y else 0.5 if x == y else 0.0
            diffs.append(0.0 if a[sid, draw] == b[sid, draw] else b[sid, draw] - a[sid, draw])
    win, ci, n = run_clip_mean(wins, [a["base"] for a, _ in pairs], n_boot, seed)
    return {"pairs": n, "win": win, "ci": ci, "median_diff": float(np.median(diffs)) if diffs else math.nan}


def run_clip_mean(values: list[dict[tuple[str, str], float]], bases: list[int], n_boot: int,
                  seed: int = 0) -> tuple[float, list[float], int]:
    """(mean over every run's (clip, draw) entries, its 95% interval by resampling bases, runs and
    clips (`run_clip_picks`; each resample averages all draws of the (run, clip) cells it drew),
    number of entries) of `values`, one {(sample_id, draw): value} per run, run r on base
    `bases[r]`; (nan, [nan, nan], 0) if empty."""
    ids = sorted({sid for v in values for sid, _ in v})
    if not ids:
        return math.nan, [math.nan, math.nan], 0
    index = {sid: i for i, sid in enumerate(ids)}
    cells = np.zeros((len(values), len(ids), 2))  # [sum over draws, draws] per (run, clip)
    for k, v in enumerate(values):
        for (sid, _), x in v.items():
            cells[k, index[sid]] += (x, 1.0)
    with np.errstate(invalid="ignore"):
        mean = float(cells[..., 0].sum() / cells[..., 1].sum())
    picks = run_clip_picks(bases, len(ids), max(n_boot, 1), seed)
    return mean, evaluate.clip_interval(cells.reshape(-1, 2), picks), int(cells[..., 1].sum())


def pool(runs: list[dict], n_boot: int, seed: int = 0) -> dict:
    """One row of the table from the evaluations of its runs (journal entries plus their `base`,
    `seed` and `metrics_csv`). One run: that evaluation as it is. Several: each metric the mean
    over every run's (clip, draw) entries, its 95% interval by resampling bases, runs and clips
    (`run_clip_picks`); the frame statistics and per-frame curves the mean over the runs."""
    per_run = [{k: r[k] for k in ("model", "summary", "base", "seed", "metrics_csv")} for r in runs]
    if len(runs) == 1:
        return {**{k: v for k, v in runs[0].items() if k not in ("base", "seed", "metrics_csv")}, "runs": per_run}
    summary = {k: float(np.mean([r["summary"][k] for r in runs])) for k in runs[0]["summary"]
               if all(k in r["summary"] for r in runs)}
    ci = {}
    for key in runs[0]["summary_ci"]:
        mean, interval, n = run_clip_mean([_read_csv(r["metrics_csv"], key) for r in runs], [r["base"] for r in runs],
                                          n_boot, seed)
        if n:
            summary[key], ci[key] = mean, interval
    curves = {k: [float(np.mean(x)) for x in zip(*(r["per_frame"][k] for r in runs))] for k in runs[0]["per_frame"]}
    done = [tuple(map(int, r["clips"].split("/"))) for r in runs]
    return {"model": ", ".join(r["model"] for r in runs), "run_id": [r["run_id"] for r in runs], "summary": summary,
            "summary_ci": ci, "clips": f"{sum(a for a, _ in done)}/{sum(b for _, b in done)}", "per_frame": curves,
            "runs": per_run}


def comparisons(rows: list[dict], n_boot: int, reference: str = "full") -> str:
    """Markdown: for every other row, the share of paired (run, clip, draw) entries on which the
    `reference` row (the full method by default) is better, with its 95% interval; * where the
    interval excludes 0.5. Last column: the median paired difference (row minus reference) in the
    first PAIRED metric."""
    ref = next((r for r in rows if r["variant"] == reference), None)
    if ref is None or len(rows) < 2:
        return ""
    n_bases = len({r["base"] for r in ref["runs"]})
    n_seeds = max(len(r["runs"]) for r in rows) // n_bases  # an untrained reference has one run per base
    over = "clips"
    if n_seeds > 1:
        over = f"runs × clips (the {n_seeds} fine-tuning seeds paired run by run)"
    if n_bases > 1:
        over = (f"bases, runs within each × clips ({n_bases} bases × {n_seeds} fine-tuning run{'s' * (n_seeds > 1)} "
                "each, paired run by run)")
    who = "the full method" if reference == "full" else ref["label"]
    head = ["variant", *(f"{reference} better on {k}" for k, _ in PAIRED), f"median Δ {PAIRED[0][0]} (row − {reference})"]
    md = [f"Paired with {who} (same clips, same seeds): the share of (clip, draw) pairs on "
          f"which {who} is better, 95% interval over {over}; * = significant (0.5 outside). "
          f"Last column: the median over the pairs of the row's value minus {who}'s.", "",
          "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    read = functools.lru_cache(maxsize=None)(_read_csv)  # the reference's runs pair with every row's: read once
    for r in rows:
        if r is ref:
            continue
        cells, first = [], None
        for k, lower in PAIRED:
            c = paired(ref["runs"], r["runs"], k, lower, n_boot, read=read)
            first = first or c
            star = "*" if c["ci"][0] > 0.5 or c["ci"][1] < 0.5 else ""
            cells.append(f"{c['win']:.2f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]{star} (n={c['pairs']})")
        cells.append(f"{first['median_diff']:+.4f}")
        md.append("| " + " | ".join([r["label"], *cells]) + " |")
    return "\n".join(md) + "\n"


def per_run(rows: list[dict], metric: str) -> str:
    """Markdown: `metric` of each run of the rows that have several: how far the training seed
    (and the base) alone moves a row ("" when every row is one run). An untrained run (one per
    base) stands under its base's first seed."""
    n = max(len(r["runs"]) for r in rows)
    if n == 1:
        return ""
    cols = sorted({(x["base"], x["seed"] or 0) for r in rows for x in r["runs"]})
    bases = len({b for b, _ in cols}) > 1
    head = ["variant", *((f"base +{b}, " if bases else "") + f"seed +{k}" for b, k in cols)]
    md = [f"{metric} of each fine-tuning run (base +b: pretrain seeds + b; seed +k: train.seed + k):" if bases
          else f"{metric} of each fine-tuning run (train.seed + k):", "",
          "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        if len(r["runs"]) > 1:
            at = {(x["base"], x["seed"] or 0): _num(x["summary"].get(metric, math.nan)) for x in r["runs"]}
            md.append("| " + " | ".join([r["label"], *(at.get(c, "—") for c in cols)]) + " |")
    return "\n".join(md) + "\n"


def _num(x: float) -> str:
    return "nan" if x != x else ("inf" if math.isinf(x) else f"{x:.4f}")


def _ci(interval: list[float] | None) -> str:
    """` [low, high]`, the evaluation's 95% bootstrap interval, when it has one."""
    return f" [{_num(interval[0])}, {_num(interval[1])}]" if interval else ""


def plot(rows: list[dict], path: Path, key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for r in rows:
        y = r["per_frame"].get(key, [])
        if y:
            ax.plot(range(1, len(y) + 1), y, marker="o", ms=3, label=r["label"],
                    lw=2.4 if r["variant"] == "full" else 1.3, ls="--" if r["variant"] == "per-frame-base" else "-")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("frame")
    ax.set_ylabel(f"{key} (mean over clips)")
    ax.set_title("Per-frame Chamfer over time (empty frames left out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main


def _train(tcfg: TrainConfig) -> dict:
    r = train.main(tcfg)
    return {"run_id": r.run_id, "checkpoint": r.checkpoint, "model": r.model, "steps": r.step, "wall_s": r.wall_s}


def main(cfg: AblateConfig) -> dict:
    import mlflow

    t0 = time.time()
    check_config(cfg)
    root = Path(cfg.output_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = tracking.tracking_uri(cfg.mlflow)
    mlflow.set_tracking_uri(uri)
    journal = Journal(root)
    used: dict[str, float] = {}  # stage -> wall seconds, of the stages this config uses

    def stage(key: str, fn):
        done = journal.get(key)
        if done is None:
            log.info("=== %s (elapsed %s)", key, hms(time.time() - t0))
            t = time.time()
            done = fn()
            journal.put(key, done, time.time() - t)
        else:
            log.info("%s: already done, reused", key)
        used[key] = journal.data["wall_s"][key]
        return done

    # 1. datasets: the aligned one (pretraining, evaluation) and one per distinct dataset override set.
    datasets = {}
    for overrides in [(), *sorted({tuple(v.dataset) for v in cfg.variants if v.dataset})]:
        dcfg, name = dataset_cfg(cfg, uri, list(overrides))
        datasets[overrides] = stage(f"dataset:{name}", lambda dcfg=dcfg: {"path": build_dataset.main(dcfg).output})["path"]
    aligned = datasets[()]

    # 2. the frozen bases (base_seeds), pretrained on the train split of the aligned dataset.
    bases = []
    for j in range(cfg.base_seeds):
        pcfg, pkey = pretrain_cfg(cfg, uri, aligned, j)
        bases.append(stage(f"pretrain:{pkey}", lambda pcfg=pcfg: {
            k: v for k, v in pretrain_base.main(pcfg).items() if k != "sha256"}))

    # 3. fine-tune each distinct training once; every variant gets its registry alias (sampling-only
    #    variants: the weights of their training, packed with their own sampling spec).
    from mlflow.tracking import MlflowClient

    models: dict[str, dict] = {}
    for run in (r for variant in cfg.variants for r in replicas(cfg, variant)):
        v, base, data_path = run.variant, bases[run.base], datasets[tuple(run.variant.dataset)]
        if v.untrained:
            tcfg = train_cfg(cfg, uri, v.train, data_path, base, alias=v.name, j=run.base)
            models[v.name] = stage(f"model:{v.name}:{key_of(tcfg)}", lambda tcfg=tcfg, v=v, data_path=data_path: untrained(
                cfg, tcfg, data_path, v.name, {"ablation.variant": v.name, "ablation.untrained": "true"}))
            continue
        weights, sampling = split_overrides(v)
        b = f"-b{run.base}" if run.base else ""  # (a suffix, so the first base's runs keep their stage keys)
        tcfg = train_cfg(cfg, uri, weights, data_path, base, alias=f"run-{key_of(v.dataset, weights)}{b}", j=run.base)
        trained = stage(f"train:{tcfg.run.name}", lambda tcfg=tcfg: _train(tcfg))
        vcfg = config_lib.apply(replace(tcfg, registry=RegistryConfig(cfg.name, v.name)), sampling)

        def register(v=v, vcfg=vcfg, trained=trained, data_path=data_path, sampling=sampling):
            if sampling:
                return repack(cfg, vcfg, v, trained, data_path)
            MlflowClient(uri).set_registered_model_alias(cfg.name, v.name, trained["model"]["version"])
            return trained["model"]

        models[v.name] = stage(f"model:{v.name}:{key_of(trained['run_id'], sampling)}", register)
    time_shift = cfg.finetune.model.flow.time_shift
    rows_meta = [(v.name, v.label, switches(v, time_shift), replicas(cfg, v)) for v in cfg.variants]
    if cfg.baseline:
        for run in replicas(cfg, PER_FRAME):
            tcfg = train_cfg(cfg, uri, [], aligned, bases[run.base], alias=PER_FRAME.name, j=run.base)
            models[run.variant.name] = stage(f"model:{run.variant.name}:{key_of(tcfg)}", lambda tcfg=tcfg, run=run:
                                             per_frame_base(cfg, tcfg, aligned, run.variant.name))
        rows_meta.append((PER_FRAME.name, PER_FRAME.label, switches(None, time_shift), replicas(cfg, PER_FRAME)))

    # 4. evaluate each run, pinned to its model version, on the same test clips of the aligned
    #    dataset; a row pools its runs.
    rows = []
    for name, label, sw, runs in rows_meta:
        evals = []
        for run in runs:
            run_name = run.variant.name
            ecfg, ekey = evaluate_cfg(cfg, uri, models[run_name]["version"], aligned, run_name)

            def run_eval(ecfg=ecfg):
                ev = evaluate.main(ecfg).evaluations[0]
                return {"model": ev.model.load_uri, "run_id": ev.run_id, "summary": {**ev.summary, **frame_stats(ev.clips)},
                        "summary_ci": ev.summary_ci,
                        "clips": f"{ev.evaluated}/{len(ev.clips)}",
                        "per_frame": {k: mean_per_frame(ev.clips, k) for k in ("chamfer", "chamfer_aligned", "iou_aligned")}}

            evals.append({**stage(f"eval:{run_name}:{ekey}", run_eval), "base": run.base, "seed": run.seed,
                          "metrics_csv": str(Path(ecfg.output.path) / "metrics.csv")})  # per clip and draw
        rows.append({"variant": name, "label": label, "switches": sw,
                     **pool(evals, cfg.evaluation.bootstrap, cfg.evaluation.seed)})

    # 5. the table, the plot, one MLflow run holding them.
    md, table_csv = table(rows, cfg.metric)
    md += "".join("\n" + comparisons(rows, cfg.evaluation.bootstrap, ref) for ref in cfg.paired_with)
    if seeds := per_run(rows, cfg.metric):
        md += "\n" + seeds
    plot_key = "chamfer_aligned" if any(r["per_frame"].get("chamfer_aligned") for r in rows) else "chamfer"
    plot(rows, root / "chamfer_over_time.png", plot_key)
    (root / "ablation.md").write_text(f"# Ablation: {cfg.name}\n\n{md}\n{_notes(cfg, bases, used, rows)}")
    (root / "ablation.csv").write_text(table_csv)
    with mlflow.start_run(experiment_id=tracking.experiment(cfg.mlflow.experiment, uri), run_name=cfg.name) as run:
        tracking.log_params(config_lib.flatten(config_lib.to_dict(cfg)))
        mlflow.set_tags({"shapegen4d.kind": "ablation", "base.run_id": ",".join(b["run_id"] for b in bases), "dataset.path": aligned,
                         **{f"model.{r['variant']}": r["model"] for r in rows}})
        mlflow.log_metrics({f"{r['variant']}.{k}": v for r in rows for k, v in r["summary"].items() if math.isfinite(v)})
        for f in ("ablation.md", "ablation.csv", "chamfer_over_time.png", JOURNAL):
            mlflow.log_artifact(str(root / f))
    out = {"table": str(root / "ablation.md"), "csv": str(root / "ablation.csv"),
           "plot": str(root / "chamfer_over_time.png"), "run_id": run.info.run_id, "rows": rows,
           "wall_s": time.time() - t0}
    print(f"\n{md}\nablation done in {hms(out['wall_s'])}; MLflow run {run.info.run_id}", flush=True)
    for k in ("table", "csv", "plot"):
        print(f"  {k:<6} {out[k]}")
    return out


def _notes(cfg: AblateConfig, bases: list[dict], timings: dict, rows: list[dict]) -> str:
    t = cfg.finetune.train
    b = cfg.pretrain.model.base
    several = (f"{len(bases)} bases (pretrain seeds + 0..{len(bases) - 1}), every row run on each and pooled; MLflow runs "
               if len(bases) > 1 else "MLflow run ")
    lines = [f"- Base: {b.name} ({b.size}), pretrained here ({bases[0]['frames']} frames; VAE {cfg.pretrain.vae.steps} steps, DiT "
             f"{cfg.pretrain.dit.steps} steps), frozen; {several}{', '.join(x['run_id'] for x in bases)}.",
             f"- Fine-tuning: {t.steps} steps of {t.global_batch_size} clips, lr {t.lr:g}, per variant"
             + (f", {cfg.train_seeds} runs (train.seed {t.seed}..{t.seed + cfg.train_seeds - 1}) per trained variant, "
                "pooled in its row." if cfg.train_seeds > 1 else "."),
             f"- Evaluation: {rows[0]['clips']} {'(run, clip, draw)' if len(rows[0]['runs']) > 1 else '(clip, draw)'} evaluations of {cfg.evaluation.limit or 'all'} test clips; CD = sum of the two directional mean distances, "
             "`aligned` = after one similarity per clip (frame 1); jitter = mean |step CD(pred) - step CD(truth)|.",
             "- Wall time per stage: " + ", ".join(f"{k} {hms(v)}" for k, v in timings.items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    config_lib.run_job(main, AblateConfig, __doc__)
