"""Shard integrity: train, evaluate and pretrain_base check each shard's sha256 against the manifest
at start-up (`jobs.ingest.verify_shards`), unless their `verify_sha256` key is false.

The dataset here is synthetic (schema rows of tests/test_shards.py, written as the dataset job
writes them), so no Ray and no build: seconds, not minutes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import config as config_lib
from jobs import evaluate, ingest, pretrain_base, train
from jobs.train_config import TrainConfig
from pipelines import shards
from pipelines.schema import SCHEMA_VERSION, column_shapes, to_table
from tests.test_shards import DIMS, _row

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}


def _rows(uid: str, n: int, split: str) -> list[dict]:
    return [_row(uid, k) | {"split": split} for k in range(n)]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """3 shards (2 train rows, 2 train rows, 1 test row) and the manifest the dataset job writes for them."""
    root = tmp_path / "ds"
    entries = []
    for i, rows in enumerate([_rows("a", 2, "train"), _rows("b", 2, "train"), _rows("c", 1, "test")]):
        rel = f"{shards.SHARDS}/shard-{i:05d}.parquet"
        data = shards.parquet_bytes(to_table(rows, DIMS))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        splits = {r["split"]: sum(1 for x in rows if x["split"] == r["split"]) for r in rows}
        entries.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "splits": splits, "rows": len(rows)})
    manifest = {"name": "integrity", "schema_version": SCHEMA_VERSION, "digest": "0" * 32, "config": {},
                "dims": vars(DIMS), "columns": column_shapes(DIMS), "rows": 5, "splits": {"test": 1, "train": 4},
                "shards": entries}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------- verify_shards


def test_intact_shards_pass_and_the_time_is_logged(dataset, caplog):
    caplog.set_level(logging.INFO, "shapegen4d.ingest")
    total = ingest.verify_shards(str(dataset), _manifest(dataset))
    assert total == sum(p.stat().st_size for p in (dataset / "data").iterdir())
    lines = [r.getMessage() for r in caplog.records if "verified the sha256" in r.getMessage()]
    assert len(lines) == 1 and "3 shard(s)" in lines[0] and str(dataset) in lines[0], lines


@pytest.mark.parametrize("change", ["flip", "append"])
def test_a_changed_shard_is_an_error_naming_it_and_both_digests(dataset, change):
    shard = dataset / "data/shard-00001.parquet"
    expected = _sha(shard)
    if change == "flip":
        _flip(shard)
    else:
        shard.write_bytes(shard.read_bytes() + b"\0")
    with pytest.raises(ingest.ShardIntegrityError) as e:
        ingest.verify_shards(str(dataset), _manifest(dataset))
    msg = str(e.value)
    assert isinstance(e.value, ValueError)  # run_job: exit status 1
    assert f"{dataset}/data/shard-00001.parquet: sha256 {_sha(shard)}, the manifest expects {expected}" in msg, msg
    assert "1 of 3 shard(s)" in msg and "shard-00000" not in msg and "shard-00002" not in msg
    assert "data.verify_sha256=false" in msg


def test_a_missing_shard_and_one_the_manifest_does_not_list_are_errors(dataset):
    manifest = _manifest(dataset)
    expected = manifest["shards"][0]["sha256"]
    (dataset / "data/shard-00000.parquet").unlink()
    (dataset / "data/shard-00003.parquet").write_bytes(b"stray")
    # A stray file in data/ is never read (the jobs read the manifest's list), so it is no error...
    with pytest.raises(ingest.ShardIntegrityError) as e:
        ingest.verify_shards(str(dataset), manifest, key="verify_sha256")
    msg = str(e.value)
    assert f"{dataset}/data/shard-00000.parquet: missing (the manifest expects sha256 {expected})" in msg, msg
    assert "shard-00003" not in msg and "1 of 3 shard(s)" in msg and "verify_sha256=false" in msg
    # ...but asking to read a shard the manifest does not list is.
    with pytest.raises(ingest.ShardIntegrityError, match=r"shard-00003\.parquet: not listed in the manifest"):
        ingest.verify_shards(str(dataset), manifest, ["data/shard-00001.parquet", "data/shard-00003.parquet"])


def test_only_the_shards_a_job_reads_are_hashed(dataset):
    _flip(dataset / "data/shard-00002.parquet")  # the test split's shard
    info = ingest.open_dataset(str(dataset))
    train_shards = evaluate.split_shards(info, "train")
    assert train_shards == ["data/shard-00000.parquet", "data/shard-00001.parquet"]
    assert evaluate.split_shards(info, "train", limit=2) == ["data/shard-00000.parquet"]
    assert evaluate.split_shards(info, "test") == ["data/shard-00002.parquet"]
    ingest.verify_shards(info.uri, info.manifest, train_shards)
    with pytest.raises(ingest.ShardIntegrityError, match="shard-00002"):
        ingest.verify_shards(info.uri, info.manifest, evaluate.split_shards(info, "test"))


def test_evaluate_lists_clips_from_the_shards_it_verifies(dataset):
    info = ingest.open_dataset(str(dataset))
    clips = evaluate.list_clips(info, "train", limit=3)
    assert [c.shard for c in clips] == ["data/shard-00000.parquet"] * 2 + ["data/shard-00001.parquet"]
    assert {c.shard for c in evaluate.list_clips(info, "test")} == set(evaluate.split_shards(info, "test"))


# ---------------------------------------------------------------------------------- the jobs


class Reached(Exception):
    """Raised by the step each job takes right after the check: the job got past it."""


def _reached(*_a, **_k):
    raise Reached


# job -> (main, config for the dataset + overrides, the function each main calls next, the key)
JOBS = {
    "train": (train.main, lambda ds, *o: config_lib.load(TrainConfig, REPO / "jobs/configs/train_demo.yaml",
                                                          [f"data.path={ds}", *o]), (train, "make_spec"),
              "data.verify_sha256"),
    "evaluate": (evaluate.main, lambda ds, *o: config_lib.load(evaluate.EvaluateConfig, REPO / "jobs/configs/evaluate.yaml",
                                                               [f"data.path={ds}", "split=train", *o]),
                 (evaluate, "list_clips"), "data.verify_sha256"),
    "pretrain_base": (pretrain_base.main, lambda ds, *o: config_lib.load(pretrain_base.PretrainConfig, None,
                                                                         [f"data_path={ds}", *o]),
                      (pretrain_base, "load_frames"), "verify_sha256"),
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_each_job_checks_at_start_up_and_its_key_skips_the_check(job, dataset, monkeypatch, caplog):
    main, cfg, (module, next_step), key = JOBS[job]
    monkeypatch.setattr(module, next_step, _reached)
    with pytest.raises(Reached):  # intact: the check passes
        main(cfg(dataset))
    shard = dataset / "data/shard-00001.parquet"  # a train shard: every job reads it
    _flip(shard, 4)
    with pytest.raises(ingest.ShardIntegrityError, match=f"{shard}: sha256 {_sha(shard)}"):
        main(cfg(dataset))
    caplog.set_level(logging.INFO)
    with pytest.raises(Reached):
        main(cfg(dataset, f"{key}=false"))
    assert f"{key}=false: the shards of {dataset} are read unchecked" in caplog.text


@pytest.mark.parametrize("job", sorted(JOBS))
def test_cli_exits_1_naming_the_changed_shard(job, dataset, tmp_path):
    shard = dataset / "data/shard-00001.parquet"
    expected = _sha(shard)
    shard.write_bytes(shard.read_bytes() + b"\0")
    data = {"train": [f"data.path={dataset}", f"run.storage_path={tmp_path / 'runs'}",
                      f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"],
            "evaluate": [f"data.path={dataset}", "split=train", f"output.path={tmp_path / 'eval'}",
                         f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"],
            "pretrain_base": [f"data_path={dataset}", f"output_path={tmp_path / 'base'}",
                              f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]}[job]
    config = {"train": ["--config", "jobs/configs/train_demo.yaml"], "evaluate": ["--config", "jobs/configs/evaluate.yaml"],
              "pretrain_base": []}[job]
    p = subprocess.run([sys.executable, "-m", f"jobs.{job}", *config, *data], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 1, p.stderr[-3000:]
    assert f"{shard}: sha256 {_sha(shard)}, the manifest expects {expected}" in p.stderr, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "mlflow.db").exists()  # failed before any tracking/training/evaluation work
