"""The ablation job end to end at toy size: datasets -> pretrained base -> variants -> evaluation -> table.

One real `python -m jobs.ablate` run (a subprocess, as a scheduler runs it) with three variants
that cover the four mechanisms: a trained variant (full), a dataset variant (independent
queries: its own dataset), a sampling-only variant (no time shift: the full variant's weights
under another spec), an untrained variant (the base's zero S-T layers under the full spec), plus
the per-frame base baseline.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import ablate
from jobs import config as config_lib

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "jobs" / "configs" / "ablate.yaml"
TOY = [
    "dataset.source.count=12", "dataset.split.test=0.25", "dataset.num_frames=4", "dataset.num_surface_points=1024",
    "dataset.num_queries=32", "dataset.queries.num_candidates=1024", "dataset.watertight.resolution=32",
    "dataset.sdf.num_volume=512", "dataset.sdf.num_near=512", "dataset.output.rows_per_shard=4",
    "pretrain.vae.steps=10", "pretrain.dit.steps=10", "pretrain.log_every=5", "pretrain.num_surface_points=512",
    "pretrain.num_sdf_points=512", "finetune.data.num_surface_points=512", "finetune.train.steps=2",
    "finetune.train.checkpoint_every=2", "finetune.sample.steps=2", "finetune.sample.window=4",
    "finetune.sample.mesh_resolution=24", "evaluation.limit=2", "evaluation.metrics.num_points=2000",
    "evaluation.metrics.num_uniform=2000", "evaluation.metrics.num_near=2000",
    "evaluation.metrics.temporal_points=1000", "evaluation.metrics.align_points=500", "evaluation.seeds=1",
    "variants=[{name: full, label: Full}, {name: independent-queries, label: IQ, dataset: [queries.mode=independent]},"
    " {name: no-time-shift, label: NTS, train: [model.flow.time_shift=1.0]}, {name: st-untrained, label: U, untrained: true}]",
]
ROWS = ["full", "independent-queries", "no-time-shift", "st-untrained", "per-frame-base"]
# ~4 min alone on 2 cores (two Ray Train fits); far longer when the machine is shared.
pytestmark = pytest.mark.timeout(2400)


def _run(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "jobs.ablate", "--config", str(CONFIG), f"output_path={root / 'out'}",
                           f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", *TOY, *extra],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("ablate")
    done = _run(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return root, done


def test_table_has_every_variant_with_its_switches_and_finite_metrics(study):
    root, _ = study
    out = root / "out"
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["variant"] for r in rows] == ROWS
    by = {r["variant"]: r for r in rows}
    assert (by["full"]["aligned queries"], by["full"]["shared noise"], by["full"]["time shift"]) == ("yes", "yes", "3")
    assert by["independent-queries"]["aligned queries"] == "no"
    assert by["no-time-shift"]["time shift"] == "1"
    assert (by["st-untrained"]["S-T attention"], by["st-untrained"]["shared noise"]) == ("spatio-temporal (untrained)", "yes")
    assert (by["per-frame-base"]["S-T attention"], by["per-frame-base"]["shared noise"]) == ("none (per frame)", "no")
    for r in rows:
        assert r["clips"] == "2/2", r
        for k in ("chamfer", "chamfer_aligned", "fscore_aligned", "iou_aligned", "jitter", "chamfer_aligned_nonempty"):
            assert 0.0 <= float(r[k]) < 10.0, (r["variant"], k, r[k])
        assert 0.0 <= float(r["empty_frames"]) <= 1.0
    md, paired = (out / "ablation.md").read_text().split("Paired with the full method")
    assert md.count("\n| ") == len(ROWS) + 1  # header + one line per row (the separator starts with |-)
    # every other row paired with full on the 2 clips x its draws, a share in [0, 1]
    lines = [x for x in paired.splitlines() if x.startswith("| ") and not x.startswith("| variant")]
    assert len(lines) == len(ROWS) - 1
    for x in lines:
        assert float(x.split(" | ")[-1].rstrip(" |")) == float(x.split(" | ")[-1].rstrip(" |"))  # a number, not nan
        for cell in x.split(" | ")[1:-1]:
            share, n = float(cell.split(" [")[0]), int(cell.split("(n=")[1].rstrip(") |"))
            assert 0.0 <= share <= 1.0 and n >= 2, x
    png = (out / "chamfer_over_time.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    journal = json.loads((out / ablate.JOURNAL).read_text())
    evals = {k.split(":")[1]: v for k, v in journal["stages"].items() if k.startswith("eval:")}
    assert sorted(evals) == sorted(ROWS)
    for row in ROWS:  # each row has a per-frame curve over the clip's 4 frames
        assert len(evals[row]["per_frame"]["chamfer_aligned"]) == 4


def test_every_row_is_evaluated_under_one_protocol_on_the_aligned_dataset(study):
    root, _ = study
    by_row = {r: [json.loads(f.read_text()) for f in (root / "out" / "eval").glob(f"{r}-*/metrics.json")] for r in ROWS}
    assert all(by_row.values()), by_row.keys()
    # Every row is evaluated under each protocol used (one here, two after the re-run below).
    assert len({frozenset(d["protocol"] for d in docs) for docs in by_row.values()}) == 1
    docs = [d for docs in by_row.values() for d in docs]
    assert {Path(d["dataset"]["path"]).name.split("-")[0] for d in docs} == {"aligned"}
    assert len({tuple(c["sample_id"] for c in d["clips"]) for d in docs}) == 1


def test_the_independent_queries_variant_trains_on_unaligned_queries(study):
    root, _ = study
    datasets = root / "out" / "datasets"

    def queries(name: str) -> np.ndarray:
        (folder,) = datasets.glob(f"{name}-*")
        shard = sorted((folder / "data").glob("*.parquet"))[0]
        col = pq.read_table(shard, columns=["queries"]).column("queries").combine_chunks()
        return col.to_numpy_ndarray()[0]  # [T,Q,6] of the shard's first row

    aligned, independent = queries("aligned"), queries("queries.mode=independent")
    assert aligned.shape == independent.shape
    # Same first frame (the same FPS picks it), different later frames: re-picked per frame.
    np.testing.assert_allclose(aligned[0, :, :3], independent[0, :, :3], atol=1e-6)
    assert not np.allclose(aligned[1:, :, :3], independent[1:, :, :3], atol=1e-3)


def test_sampling_only_variant_reuses_weights_and_untrained_rows_are_the_base(study):
    import mlflow
    from safetensors.torch import load_file

    from jobs import components

    root, _ = study
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")

    def fetch(alias: str) -> tuple[dict, dict]:
        d = Path(mlflow.artifacts.download_artifacts(f"models:/shapegen4d-ablation@{alias}", dst_path=str(root / alias)))
        model = next(d.rglob(ablate.registry.META)).parent
        return json.loads((model / ablate.registry.META).read_text()), load_file(str(model / ablate.registry.ST_WEIGHTS))

    full_meta, full_w = fetch("full")
    nts_meta, nts_w = fetch("no-time-shift")
    base_meta, base_w = fetch("per-frame-base")
    untrained_meta, untrained_w = fetch("st-untrained")
    assert components.fingerprint(full_w) == components.fingerprint(nts_w)
    assert (full_meta["spec"]["flow"]["time_shift"], nts_meta["spec"]["flow"]["time_shift"]) == (3.0, 1.0)
    # Fine-tuning moved the full variant away from the zero-init S-T layers the baseline keeps.
    spec = components.ModelConfig.from_dict(base_meta["spec"])
    init = components.cpu_state_dict(components.build(spec).model.st_layers)
    assert components.fingerprint(base_w) == components.fingerprint(init) != components.fingerprint(full_w)
    assert components.fingerprint(untrained_w) == components.fingerprint(init)
    assert base_meta["spec"]["flow"]["shared_noise"] is False and full_meta["spec"]["flow"]["shared_noise"] is True
    # the untrained row samples as the full method does: only the S-T weights differ
    assert untrained_meta["spec"] == full_meta["spec"]
    assert base_meta["base"]["sha256"] == full_meta["base"]["sha256"]  # one frozen base for every row


def test_rerun_reuses_every_stage_and_a_changed_config_redoes_only_what_it_changes(study):
    root, _ = study
    table = (root / "out" / "ablation.md").read_text()
    again = _run(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "=== " not in again.stderr, again.stderr[-3000:]
    # 2 datasets, the base, 3 trainings (no-time-shift's is full's), 5 models, 5 evaluations.
    assert again.stderr.count("already done, reused") == 2 + 1 + 3 + 5 + 5
    assert (root / "out" / "ablation.md").read_text() == table
    other = _run(root, "evaluation.seed=1")  # another generation seed: only the evaluations run again
    assert other.returncode == 0, other.stderr[-3000:]
    started = [line.split("=== ")[1].split(":")[0] for line in other.stderr.splitlines() if "=== " in line]
    assert started == ["eval"] * 5, started
    assert (root / "out" / "ablation.md").read_text() != table


def _started(done: subprocess.CompletedProcess) -> list[str]:
    """The stages a run did not find in the journal: kind:run name (the digest cut off)."""
    return sorted(line.split("=== ")[1].split(" (")[0].rsplit(":", 1)[0] for line in done.stderr.splitlines()
                  if "=== " in line)


def _cd(out: Path, run: str) -> float:
    """chamfer_aligned of a run's evaluation under evaluation.seed=0 (a re-run of the study adds seed 1)."""
    docs = [json.loads(f.read_text()) for f in (out / "eval").glob("*/metrics.json")
            if f.parent.name.rsplit("-", 1)[0] == run]
    (doc,) = [d for d in docs if d["clips"][0]["seed"] == 0]
    return doc["summary"]["chamfer_aligned"]


def test_train_seeds_fine_tune_each_trained_row_again_and_pool_its_runs(study):
    import mlflow
    from safetensors.torch import load_file

    from jobs import components

    root, _ = study
    out = root / "out"
    done = _run(root, "train_seeds=2")
    assert done.returncode == 0, done.stderr[-3000:]
    started = _started(done)
    # Only the second runs are new: full's and independent-queries' trainings (no-time-shift samples
    # full-s1's weights); the untrained row and the per-frame base have no training noise: one run.
    assert [s.split(":")[0] for s in started].count("train") == 2, started
    assert [s for s in started if not s.startswith("train")] == [
        "eval:full-s1", "eval:independent-queries-s1", "eval:no-time-shift-s1",
        "model:full-s1", "model:independent-queries-s1", "model:no-time-shift-s1"], started

    rows = {r["variant"]: r for r in csv.DictReader((out / "ablation.csv").open())}
    assert list(rows) == ROWS
    # The full row is the mean over both runs' (clip, draw) entries; each run has 2 clips x 1 draw.
    assert rows["full"]["clips"] == "4/4" and rows["st-untrained"]["clips"] == "2/2"
    assert float(rows["full"]["chamfer_aligned"]) == pytest.approx((_cd(out, "full") + _cd(out, "full-s1")) / 2)
    md = (out / "ablation.md").read_text()
    pairs_md, per_run = md.split("Paired with the full method")[1].split("of each fine-tuning run")
    paired = {x.split(" | ")[0][2:]: x for x in pairs_md.splitlines() if x.startswith("| ")}
    assert "(n=4)" in paired["U"] and "(n=4)" in paired["IQ"]  # run k with run k; the one untrained run with both
    for label in ("Full", "IQ", "NTS"):
        assert sum(line.startswith(f"| {label} |") for line in per_run.splitlines()) == 1
    assert "| U |" not in per_run
    # The second run trained with train.seed + 1, into other weights; no-time-shift-s1 samples them.
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")

    def weights(alias: str) -> str:
        d = Path(mlflow.artifacts.download_artifacts(f"models:/shapegen4d-ablation@{alias}", dst_path=str(root / f"w-{alias}")))
        return components.fingerprint(load_file(str(next(d.rglob(ablate.registry.ST_WEIGHTS)))))

    assert weights("full-s1") == weights("no-time-shift-s1") != weights("full")
    run_s1 = mlflow.get_run(mlflow.MlflowClient().get_model_version_by_alias("shapegen4d-ablation", "full-s1").run_id)
    assert run_s1.data.params["train.seed"] == "1"


def test_base_seeds_pretrain_another_base_and_run_every_row_on_it(study):
    import mlflow

    from jobs import components

    root, _ = study
    out = root / "out"
    done = _run(root, "base_seeds=2", "variants=[{name: full, label: Full}, {name: st-untrained, label: U, untrained: true}]")
    assert done.returncode == 0, done.stderr[-3000:]
    # Base 0's stages are reused; base 1 is pretrained and every row runs on it once more, the
    # untrained and per-frame rows included (they are that base).
    runs = ["full-b1", "per-frame-base-b1", "st-untrained-b1"]
    assert _started(done) == [f"eval:{r}" for r in runs] + [f"model:{r}" for r in runs] + ["pretrain", "train"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    bases = [v for k, v in json.loads((out / ablate.JOURNAL).read_text())["stages"].items() if k.startswith("pretrain:")]
    params = [mlflow.get_run(b["run_id"]).data.params for b in bases]
    assert sorted((p["seed"], p["model.base.seed"]) for p in params) == [("0", "0"), ("1", "1")]

    def meta(alias: str) -> dict:
        d = Path(mlflow.artifacts.download_artifacts(f"models:/shapegen4d-ablation@{alias}", dst_path=str(root / f"b-{alias}")))
        return json.loads(next(d.rglob(ablate.registry.META)).read_text())

    on_b1 = [meta(r) for r in runs]
    b1 = on_b1[0]["base"]["sha256"]
    assert all(m["base"]["sha256"] == b1 for m in on_b1) and b1 != meta("full")["base"]["sha256"]
    # fine-tuned and sampled with base 1's seed: the same tiny condition encoder it was pretrained with
    assert {components.ModelConfig.from_dict(m["spec"]).base.seed for m in on_b1} == {1}
    rows = {r["variant"]: r for r in csv.DictReader((out / "ablation.csv").open())}
    assert list(rows) == ["full", "st-untrained", "per-frame-base"]
    assert {r["clips"] for r in rows.values()} == {"4/4"}  # 2 bases x 2 clips x 1 draw
    assert float(rows["full"]["chamfer_aligned"]) == pytest.approx((_cd(out, "full") + _cd(out, "full-b1")) / 2)
    md = (out / "ablation.md").read_text()
    pairs_md, per_run = md.split("Paired with the full method")[1].split("of each fine-tuning run")
    assert "(2 bases × 1 fine-tuning run each, paired run by run)" in pairs_md
    paired = {x.split(" | ")[0][2:]: x.split(" | ")[1] for x in pairs_md.splitlines() if x.startswith("| ")}
    assert "(n=4)" in paired["U"] and "(n=4)" in paired["per-frame base (no S-T layers)"]  # each base's run with full's
    assert "| variant | base +0, seed +0 | base +1, seed +0 |" in per_run
    assert f"| U | {ablate._num(_cd(out, 'st-untrained'))} | {ablate._num(_cd(out, 'st-untrained-b1'))} |" in per_run


def test_pooled_runs_resample_runs_and_clips_so_the_interval_covers_the_seed(tmp_path):
    pairs = [(f"c{i}", k) for i in range(10) for k in range(3)]
    f0, f1 = (_metrics_csv(tmp_path / f"f{k}.csv", {p: 0.3 for p in pairs}) for k in range(2))
    r0 = _metrics_csv(tmp_path / "r0.csv", {p: 0.4 for p in pairs})  # seed 0: full better everywhere
    r1 = _metrics_csv(tmp_path / "r1.csv", {p: 0.2 for p in pairs})  # seed 1: full worse everywhere
    assert ablate.paired(_runs(f0), _runs(r0), "chamfer_aligned", True, 500)["ci"] == [1.0, 1.0]  # clips alone: no doubt
    both = ablate.paired(_runs(f0, f1), _runs(r0, r1), "chamfer_aligned", True, 500)
    # Half the resamples draw one seed twice: the interval spans what the seed alone does.
    assert both["pairs"] == 60 and both["win"] == 0.5 and both["ci"] == [0.0, 1.0]
    # A one-run row (untrained: no training noise) is paired with every run of full.
    assert ablate.paired(_runs(f0, f1), _runs(r0, seed=None), "chamfer_aligned", True, 500)["pairs"] == 60
    with pytest.raises(ValueError, match=r"cannot pair runs \(base, seed\) \[\(0, 2\)\]"):
        ablate.paired(_runs(f0, f1), _runs(r0, r1, r0), "chamfer_aligned", True, 10)
    # One run: the crossed resampling is the evaluation's clip bootstrap, draw for draw.
    np.testing.assert_array_equal(ablate.run_clip_picks([0], 10, 50, 7), ablate.evaluate.clip_picks(10, 50, 7))

    def run(path, value, seed=0):
        return {"model": path, "run_id": path, "summary": {"chamfer_aligned": value, "empty_frames": value / 10},
                "summary_ci": {"chamfer_aligned": [value, value]}, "clips": "30/30",
                "per_frame": {"chamfer_aligned": [value, 2 * value]}, "metrics_csv": path, "base": 0, "seed": seed}

    assert ablate.pool([run(r0, 0.4)], 100)["summary_ci"] == {"chamfer_aligned": [0.4, 0.4]}  # one run: as evaluated
    row = ablate.pool([run(r0, 0.4), run(r1, 0.2, seed=1)], 500)
    assert row["summary"]["chamfer_aligned"] == pytest.approx(0.3) and row["clips"] == "60/60"
    assert row["summary_ci"]["chamfer_aligned"] == [pytest.approx(0.2), pytest.approx(0.4)]
    assert row["summary"]["empty_frames"] == pytest.approx(0.03)  # no per-entry values: the runs' mean
    assert row["per_frame"]["chamfer_aligned"] == [pytest.approx(0.3), pytest.approx(0.6)]
    assert [(r["metrics_csv"], r["summary"]["chamfer_aligned"]) for r in row["runs"]] == [(r0, 0.4), (r1, 0.2)]


def test_several_bases_pair_runs_within_a_base_and_resample_bases_first(tmp_path):
    pairs = [(f"c{i}", k) for i in range(10) for k in range(3)]
    csvs = {v: _metrics_csv(tmp_path / f"{v}.csv", {p: v for p in pairs}) for v in (0.2, 0.3, 0.4)}
    # Full: 0.3 on both bases, two seeds each. The untrained row: worse than full on base 0,
    # better on base 1; its one run per base pairs with both seeds of full on that base only
    # (pairing across bases would make half the pairs of each base flip).
    full = _runs(csvs[0.3], csvs[0.3]) + _runs(csvs[0.3], csvs[0.3], base=1)
    row = _runs(csvs[0.4], seed=None) + _runs(csvs[0.2], seed=None, base=1)
    both = ablate.paired(full, row, "chamfer_aligned", True, 1000)
    assert both["pairs"] == 4 * 30 and both["win"] == 0.5
    assert both["ci"] == [0.0, 1.0]  # what the base alone does

    def one_base(bases):  # share of resamples whose 4 runs (0, 1 on base 0; 2, 3 on base 1) are of one base
        runs = ablate.run_clip_picks(bases, 10, 4000, 3).reshape(4000, 4, 10)[..., 0] // 10
        return np.mean((runs // 2).min(1) == (runs // 2).max(1))

    # Bases first: half the resamples draw one base twice, and then every run is of it; drawing the
    # 4 runs flat (as if each had its own base) gives that in 2 / 16.
    assert 0.45 < one_base([0, 0, 1, 1]) < 0.55 and 0.09 < one_base([0, 1, 2, 3]) < 0.16
    picks = ablate.run_clip_picks([0, 0, 1, 1], 10, 400, 3).reshape(400, 4, 10) // 10  # the run of every cell
    assert np.all(picks == picks[..., :1])  # a run is drawn for all clips at once
    base_BGS = (picks[..., 0] // 2).reshape(400, 2, 2)
    assert np.all(base_BGS == base_BGS[..., :1])  # each drawn base contributes its own runs only
    assert 0.35 < np.mean(base_BGS[:, 0, 0] == base_BGS[:, 1, 0]) < 0.65  # bases drawn with replacement
    with pytest.raises(ValueError, match="equally many runs"):
        ablate.run_clip_picks([0, 0, 1], 10, 10)
    with pytest.raises(ValueError, match="cannot pair"):  # a base full was not run on
        ablate.paired(full[:2], row, "chamfer_aligned", True, 10)


def test_config_rejects_keys_the_job_derives_and_bad_variant_names():
    for key, part in [("finetune.model.base.checkpoint=/some/base", "finetune.model.base"),
                      ("finetune.ray.num_cpus=1", "finetune.ray"), ("pretrain.mlflow.tracking_uri=x", "pretrain.mlflow"),
                      ("evaluation.data.path=/d", "evaluation.data.path"), ("dataset.output.path=/o", "dataset.output.path")]:
        cfg = config_lib.load(ablate.AblateConfig, CONFIG, [key])
        with pytest.raises(config_lib.ConfigError, match=f"{part} is set by jobs.ablate"):
            ablate.check_config(cfg)
    ablate.check_config(config_lib.load(ablate.AblateConfig, CONFIG, []))  # the shipped config derives nothing itself
    cfg = config_lib.load(ablate.AblateConfig, CONFIG, ["variants=[{name: 'bad name', label: x}]"])
    with pytest.raises(config_lib.ConfigError, match="bad name"):
        ablate.check_config(cfg)
    cfg = config_lib.load(ablate.AblateConfig, CONFIG, ["variants=[{name: full, label: a}, {name: full, label: b}]"])
    with pytest.raises(config_lib.ConfigError, match="unique"):
        ablate.check_config(cfg)
    for overrides, match in [(["train_seeds=0"], "train_seeds must be >= 1"), (["base_seeds=0"], "base_seeds must be >= 1"),
                             (["base_seeds=2", "variants=[{name: full, label: a}, {name: full-b1, label: b}]"], "collide"),
                             (["train_seeds=2", "variants=[{name: a, label: a, train: [train.seed=3]}]"], "set train.seed"),
                             (["train_seeds=2", "variants=[{name: full, label: a}, {name: full-s1, label: b}]"], "collide"),
                             (["paired_with=[full, temporal]"], r"paired_with \['temporal'\]: no such row"),
                             (["baseline=false", "paired_with=[per-frame-base]"], "no such row")]:
        with pytest.raises(config_lib.ConfigError, match=match):
            ablate.check_config(config_lib.load(ablate.AblateConfig, CONFIG, overrides))
    ablate.check_config(config_lib.load(ablate.AblateConfig, CONFIG, ["paired_with=[full, temporal-only, per-frame-base]"]))


def test_only_sampling_keys_are_split_off_a_variants_training():
    v = ablate.Variant("v", "v", train=["model.flow.time_shift=1.0", "model.flow.shared_noise=false", "sample.steps=4",
                                        "model.flow.sigma_grid=linear", "model.flow.loss_weighting=uniform",
                                        "model.flow.zero_first_step=false"])
    assert ablate.split_overrides(v) == (["model.flow.shared_noise=false", "model.flow.loss_weighting=uniform"],
                                         ["model.flow.time_shift=1.0", "sample.steps=4", "model.flow.sigma_grid=linear",
                                          "model.flow.zero_first_step=false"])
    assert ablate.split_overrides(ablate.Variant("w", "w", dataset=["queries.mode=independent"])) == ([], [])


def test_empty_frames_are_counted_and_left_out_of_the_per_frame_means():
    inf = float("inf")
    clips = [{"status": "ok", "num_frames": 2, "empty_pred_frames": 1, "per_frame": {"chamfer_aligned": [0.2, inf]}},
             {"status": "ok", "num_frames": 2, "empty_pred_frames": 0, "per_frame": {"chamfer_aligned": [0.4, 0.6]}},
             {"status": "error"}]
    assert ablate.frame_stats(clips) == {"empty_frames": 0.25, "chamfer_aligned_nonempty": pytest.approx(0.4)}
    assert ablate.mean_per_frame(clips, "chamfer_aligned") == [pytest.approx(0.3), pytest.approx(0.6)]


def _runs(*paths: str, base: int = 0, seed: int | None = 0) -> list[dict]:
    """Evaluations of fine-tuning runs k = seed, seed + 1, ... (None: untrained) on one base."""
    return [{"base": base, "seed": None if seed is None else seed + k, "metrics_csv": p} for k, p in enumerate(paths)]


def _metrics_csv(path: Path, values: dict[tuple[str, int], float], key: str = "chamfer_aligned") -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "draw", "status", key])
        for (sid, draw), v in values.items():
            w.writerow([sid, draw, "ok", v])
        w.writerow(["broken", 0, "error", ""])  # error rows are not pairs
    return str(path)


def test_paired_comparison_counts_wins_per_clip_and_draw_and_survives_empty_frames(tmp_path):
    inf = float("inf")
    pairs = [(f"c{i}", k) for i in range(10) for k in range(3)]
    full = _metrics_csv(tmp_path / "full.csv", {p: 0.3 for p in pairs})
    # the same numbers: every pair a tie, 0.5 exactly, not significant
    same = ablate.paired(_runs(full), _runs(full), "chamfer_aligned", True, 500)
    assert same["pairs"] == 30 and same["win"] == 0.5 and same["ci"] == [0.5, 0.5] and same["median_diff"] == 0.0
    # every pair of the row has an empty frame (CD inf): the full method wins all 30
    empty = _metrics_csv(tmp_path / "empty.csv", {p: inf for p in pairs})
    assert ablate.paired(_runs(full), _runs(empty), "chamfer_aligned", True, 500) == {"pairs": 30, "win": 1.0, "ci": [1.0, 1.0],
                                                                         "median_diff": inf}
    # higher-is-better metrics flip: a higher IoU in the row is a loss of the full method
    iou = ablate.paired(_runs(full), _runs(empty), "chamfer_aligned", False, 500)
    assert iou["win"] == 0.0
    # the full method better on 7 of 10 clips (all their draws), worse on 3: 0.7, and the
    # interval comes from resampling the 10 clips, not the 30 pairs
    mixed = _metrics_csv(tmp_path / "mixed.csv", {(s, k): 0.4 if int(s[1:]) < 7 else 0.2 for s, k in pairs})
    m = ablate.paired(_runs(full), _runs(mixed), "chamfer_aligned", True, 2000)
    assert m["win"] == pytest.approx(0.7)
    assert m["median_diff"] == pytest.approx(0.1)  # row minus full: +0.1 on 21 pairs, -0.1 on 9
    assert 0.3 < m["ci"][0] < 0.6 and 0.85 < m["ci"][1] <= 1.0
    # only pairs present in both count
    half = _metrics_csv(tmp_path / "half.csv", {p: 0.4 for p in pairs[:15]})
    assert ablate.paired(_runs(full), _runs(half), "chamfer_aligned", True, 100)["pairs"] == 15


def test_comparison_table_marks_significance(tmp_path, monkeypatch):
    pairs = [(f"c{i}", k) for i in range(8) for k in range(3)]
    rows = [{"variant": "full", "label": "Full", "runs": _runs(_metrics_csv(tmp_path / "a.csv", {p: 0.3 for p in pairs}))},
            {"variant": "worse", "label": "Worse", "runs": _runs(_metrics_csv(tmp_path / "b.csv", {p: 0.5 for p in pairs}))},
            {"variant": "same", "label": "Same", "runs": _runs(_metrics_csv(tmp_path / "c.csv", {p: 0.3 for p in pairs}))}]
    reads = []
    monkeypatch.setattr(ablate, "_read_csv", lambda path, key, read=ablate._read_csv: reads.append((path, key)) or read(path, key))
    md = ablate.comparisons(rows, 200).splitlines()
    assert len(reads) == len(set(reads)) == 3 * len(ablate.PAIRED)  # full's CSV read once, not once per row
    # Paired with another row: its label, its wins (Worse beats nobody, Full and Same beat it)
    by_worse = ablate.comparisons(rows, 200, reference="worse").splitlines()
    assert by_worse[0].startswith("Paired with Worse (same clips, same seeds)") and "worse better on chamfer_aligned" in by_worse[2]
    assert [x.split(" | ")[1] for x in by_worse[4:]] == ["0.00 [0.00, 0.00]* (n=24)"] * 2
    assert by_worse[4].startswith("| Full") and by_worse[4].endswith("-0.2000 |")
    worse, same = next(x for x in md if x.startswith("| Worse")), next(x for x in md if x.startswith("| Same"))
    # chamfer_aligned is the first paired column; the CSVs have no other metric (no pairs there)
    assert worse.split(" | ")[1] == "1.00 [1.00, 1.00]* (n=24)"
    assert same.split(" | ")[1] == "0.50 [0.50, 0.50] (n=24)"
    assert "(n=0)" in worse.split(" | ")[2]
    assert (worse.split(" | ")[-1], same.split(" | ")[-1]) == ("+0.2000 |", "+0.0000 |")  # median paired difference


def test_a_switch_added_later_keeps_the_stage_keys_at_its_default():
    """A finished study's journal stays valid when a new switch is added at the default that is
    the old behaviour: the stage keys leave it out there, and only a row that sets it is new."""
    t = config_lib.load(ablate.AblateConfig, CONFIG, []).finetune
    before = config_lib.to_dict(t)
    for k in ("same_token_bias", "same_token_init", "head_dim"):  # added after the 400-step study's journal
        del before["model"]["st"][k]
    assert ablate.key_of(t) == config_lib.digest([before])[:12]
    for switch in ("model.st.same_token_bias=true", "model.st.same_token_init=5.74", "model.st.head_dim=64"):
        assert ablate.key_of(config_lib.apply(t, [switch])) != ablate.key_of(t)
