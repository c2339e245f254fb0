"""The hostile corpus (pipelines.hostile) through the real dataset job, beside the shipped samples.

One clean build of the samples alone (in-process, `build_dataset.main`) and one build of the same
source folder after the corpus was written into it (`python -m jobs.build_dataset` in a
subprocess, with a canary in its environment), shared by every test of the module. Both builds
read the same `source.path` with the same config, so their rows (which carry the config digest)
can be compared byte for byte.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import build_dataset
from jobs import config as config_lib
from pipelines import analytic, hostile
from jobs.build_dataset import DatasetJobConfig

REPO = Path(__file__).resolve().parents[1]
CORPUS = "hostile"  # the corpus folder inside the source folder: uids "hostile__<case path>"

TINY = [*hostile.JOB_OVERRIDES, "ray.num_cpus=2"]
LIMITS = {**hostile.CORPUS_LIMITS, "timeout_s": hostile.JOB_TIMEOUT_S}
CANARY_ENV = "SHAPEGEN4D_FUZZ_CANARY"


def _overrides(source: Path, out: Path, tracking: str) -> list[str]:
    return [f"source.path={source}", f"output.path={out}", f"mlflow.tracking_uri={tracking}",
            *TINY, *hostile.job_overrides(LIMITS)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    src = root / "src"
    analytic.write_samples(src)
    tracking = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    (root / "mlflow").mkdir()

    # MLflow puts a local store's artifacts under ./mlruns: run both builds from the tmp folder.
    cwd = os.getcwd()
    os.chdir(root)
    try:
        t0 = time.time()
        clean = build_dataset.main(config_lib.load(DatasetJobConfig, None, _overrides(src, root / "clean", tracking)))
        clean_s = time.time() - t0
    finally:
        os.chdir(cwd)

    corpus = hostile.write_corpus(src / CORPUS, LIMITS, max_faces=hostile.BAD_MAX_FACES)
    canary = secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(REPO), CANARY_ENV: canary}
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.build_dataset", *_overrides(src, root / "hostile", tracking)],
        cwd=root, env=env, capture_output=True, timeout=900,
    )
    hostile_s = time.time() - t0
    print(f"clean build {clean_s:.1f} s, hostile build {hostile_s:.1f} s ({len(corpus)} hostile files)")
    return {
        "root": root, "src": src, "corpus": corpus, "canary": canary, "clean": clean, "proc": proc,
        "secret": (src / CORPUS / hostile.SECRET_FILE).read_bytes().splitlines()[0],
    }


def _rejects(out: Path) -> list[dict]:
    return pq.read_table(out / "rejects.parquet").to_pylist()


def _shards_by_uid(out: Path) -> dict[str, bytes]:
    """uid -> bytes of the one-row shard that holds it (rows_per_shard=1)."""
    manifest = json.loads((out / "manifest.json").read_text())
    shards = {}
    for s in manifest["shards"]:
        data = (out / s["path"]).read_bytes()
        (uid,) = set(pq.read_table(pa.BufferReader(data)).column("uid").to_pylist())
        assert uid not in shards, uid
        shards[uid] = data
    return shards


def test_the_job_exits_0(runs):
    proc = runs["proc"]
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    manifest = json.loads((runs["root"] / "hostile" / "manifest.json").read_text())
    funnel = manifest["funnel"]
    assert funnel["assets_processed"] == len(analytic.SAMPLES) + len(runs["corpus"])
    assert funnel["assets_kept"] == len(analytic.SAMPLES)


def test_each_hostile_file_gives_one_reject_with_its_reason(runs):
    rejects = _rejects(runs["root"] / "hostile")
    by_uid: dict[str, list[dict]] = {}
    for r in rejects:
        by_uid.setdefault(r["uid"], []).append(r)
    wrong = []
    for case, (rel, expected) in runs["corpus"].items():
        rows = by_uid.pop(hostile.uid_of(rel, CORPUS), [])
        got = [(r["stage"], r["reason"]) for r in rows]
        if got != [expected]:
            wrong.append(f"{case}: expected {expected}, got {got} {[r['detail'][:300] for r in rows]}")
    assert not wrong, f"{len(wrong)} of {len(runs['corpus'])} cases:\n" + "\n".join(wrong)
    assert not by_uid, f"rejects of assets outside the corpus: {by_uid}"
    assert not [r for r in rejects if r["reason"] == "internal_error"]
    assert all(r["detail"] for r in rejects)


def test_too_large_rejects_name_their_limit(runs):
    by_uid = {r["uid"]: r for r in _rejects(runs["root"] / "hostile")}
    for case, keys in hostile.TOO_LARGE_KEYS.items():
        detail = by_uid[hostile.uid_of(runs["corpus"][case][0], CORPUS)]["detail"]
        assert any(f"limits.{k}" in detail for k in keys), (case, detail)


def test_good_assets_are_byte_identical_to_a_clean_run(runs):
    clean = _shards_by_uid(runs["root"] / "clean")
    dirty = _shards_by_uid(runs["root"] / "hostile")
    assert set(clean) == set(dirty) == set(analytic.SAMPLES)
    for uid in clean:
        assert clean[uid] == dirty[uid], uid
    assert runs["clean"].manifest["funnel"]["assets_kept"] == len(analytic.SAMPLES)


def _searchable(path: Path) -> bytes:
    """A file's bytes, plus for Parquet its contents uncompressed (an Arrow IPC stream), since
    zstd would hide a leaked string from a plain byte search."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        table = pq.read_table(pa.BufferReader(data))
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data += sink.getvalue()
    return data


def test_no_secret_reaches_any_output(runs):
    secrets_ = {"planted secret.bin": runs["secret"], CANARY_ENV: runs["canary"].encode()}
    try:
        first = Path("/etc/passwd").read_bytes().splitlines()[0]
        if first.strip():
            secrets_["/etc/passwd line 1"] = first
    except (OSError, IndexError):
        pass
    out = runs["root"] / "hostile"
    outputs = [out, runs["root"] / "mlflow", runs["root"] / "mlruns"]  # the dataset, MLflow's store and artifacts
    files = [p for folder in outputs for p in folder.rglob("*") if p.is_file()]
    assert any(p.parent.name == "_journal" for p in files) and (out / "manifest.json") in files
    leaks = [(str(p), name) for p in files for name, s in secrets_.items() if s in _searchable(p)]
    proc = runs["proc"]
    leaks += [("job output", name) for name, s in secrets_.items() if s in proc.stdout + proc.stderr]
    assert not leaks


def test_repacked_glb_is_padded_and_reads_like_the_original():
    """The corpus's GLB helper: re-packing a writer GLB after a JSON edit keeps the spec's layout."""
    import struct

    from pipelines import gltf_io

    glb = hostile._base_glb()
    doc, bin_ = hostile.split_glb(glb)
    assert hostile.pack_glb(doc, bin_) == glb  # same JSON and padding as GltfBuilder.to_glb
    doc["asset"]["generator"] = "x"  # a JSON chunk of another length: padding needed again
    edited = hostile.pack_glb(doc, bin_)
    assert struct.unpack_from("<I", edited, 8)[0] == len(edited) and len(edited) % 4 == 0
    jlen = struct.unpack_from("<I", edited, 12)[0]
    assert jlen % 4 == 0 and edited[20 + jlen - 1 : 20 + jlen] in (b" ", b"}")
    g = gltf_io.load_gltf(edited)
    assert g.accessor(0).shape == (4, 3) and g.json["asset"]["generator"] == "x"
