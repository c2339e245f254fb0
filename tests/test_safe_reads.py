"""Reads stay inside the asset: external glTF buffers and the asset file itself (pipelines.sources).

Fast, no Ray. Small animated tetrahedra are written as .gltf + .bin with the repo's writer; the
external reader is exercised directly (`read(uri, max_bytes)`), through gltf_io (which URL-decodes
the uri) and, for whole-asset rejects, through process.process_asset.
"""
from __future__ import annotations

import inspect
import os
import time
import uuid

import fsspec
import pyarrow.fs as pafs
import pytest

from pipelines import gltf_io, process, sources
from pipelines.errors import AssetError
from pipelines.limits import LimitsConfig
from pipelines.bad_assets import TETRA, TETRA_FACES, moving_asset

SECRET = b"TOP-SECRET-0123456789-do-not-leak"
TINY = LimitsConfig(max_file_mb=0.001)  # 1,048 bytes


def _asset(folder, uri: str | None = "buf.bin", name: str = "asset", write_bin: bool = True):
    """A .gltf whose one buffer has `uri`; returns (gltf path, the buffer's bytes). The buffer
    is written to <folder>/buf.bin when write_bin."""
    b = moving_asset(TETRA, TETRA_FACES)
    folder.mkdir(parents=True, exist_ok=True)
    gltf, bin_ = b.to_gltf_files(folder, name)
    blob = bin_.read_bytes()
    bin_.unlink()
    if write_bin:
        (folder / "buf.bin").write_bytes(blob)
    doc = b.document(buffer_uri=uri)
    if uri is None:
        del doc["buffers"][0]["uri"]
    from pipelines.gltf_write import _dumps

    gltf.write_bytes(_dumps(doc))
    return gltf, blob


def _ref(path) -> sources.AssetRef:
    return sources.AssetRef("u", "local", str(path), "cc0", "u", {})


def _reader(folder, limits: LimitsConfig | None = None):
    gltf, blob = _asset(folder)
    data, read = sources.fetch(_ref(gltf), sources.SourceConfig(), limits)
    return read, blob, data


@pytest.fixture
def tree(tmp_path):
    """tmp/secret.bin (known bytes), tmp/outside/ (a folder with the secret), tmp/asset/ (the asset)."""
    (tmp_path / "secret.bin").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.bin").write_bytes(SECRET)
    read, blob, data = _reader(tmp_path / "asset")
    return tmp_path, read, blob


def _refused(read, uri, max_bytes=None) -> AssetError:
    with pytest.raises(AssetError) as e:
        read(uri, max_bytes)
    err = e.value
    assert (err.stage, err.reason) == ("read", "unsafe_uri"), (uri, err)
    for text in (err.detail, str(err), repr(err)):
        assert SECRET.decode() not in text
    return err


def _gltf_limits_ready() -> bool:
    """gltf_io.load_gltf takes the limits (process_asset passes them) once that change has landed."""
    return "limits" in inspect.signature(gltf_io.load_gltf).parameters or len(
        inspect.signature(gltf_io.load_gltf).parameters) >= 3


def _process_reject(ref, tmp_path, *extra):
    if not _gltf_limits_ready():
        pytest.skip("gltf_io.load_gltf does not take limits yet (another change); process_asset cannot run")
    from jobs import config as config_lib
    from pipelines.config import DatasetConfig

    cfg = config_lib.load(DatasetConfig, None, [f"source.path={tmp_path}", "num_frames=3", "source.min_faces=0", *extra])
    result = process.process_asset(ref, cfg, "digest")
    assert result.rows == []
    (rej,) = result.rejects
    return rej


# --------------------------------------------------------------------------- reads inside the folder


def test_inside_buffer_reads_and_stops_at_byte_length(tmp_path):
    read, blob, data = _reader(tmp_path / "a")
    g = gltf_io.load_gltf(data, read)
    assert g.buffer(0) == blob
    assert g.accessor(0).shape == (4, 3)
    assert read("buf.bin", len(blob)) == blob
    assert read("buf.bin", 10) == blob[:10]
    assert read("./sub/../buf.bin", 5) == blob[:5]
    assert read("buf.bin", 0) == b""
    # A longer file: only its first byteLength bytes are the buffer.
    (tmp_path / "a" / "buf.bin").write_bytes(blob + b"\xff" * 5000)
    assert read("buf.bin", len(blob)) == blob
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        read("missing.bin", 4)
    with pytest.raises(ValueError):
        read("buf.bin", -1)


def test_gltf_io_reports_a_refusal_unchanged(tree):
    tmp_path, _, _ = tree
    for uri in ("../secret.bin", "%2e%2e/secret.bin", "%2E%2E%2Fsecret.bin", "..%2fsecret.bin"):
        gltf, _ = _asset(tmp_path / "enc", uri=uri, write_bin=False)
        data, read = sources.fetch(_ref(gltf), sources.SourceConfig())
        g = gltf_io.load_gltf(data, read)  # gltf_io URL-decodes the uri before the reader sees it
        with pytest.raises(AssetError) as e:
            g.accessor(0)
        assert (e.value.stage, e.value.reason) == ("read", "unsafe_uri"), (uri, e.value)
        assert SECRET.decode() not in str(e.value)
    # A missing file inside the folder is still missing_buffer.
    gltf, _ = _asset(tmp_path / "gone", uri="nothere.bin", write_bin=False)
    data, read = sources.fetch(_ref(gltf), sources.SourceConfig())
    with pytest.raises(AssetError) as e:
        gltf_io.load_gltf(data, read).accessor(0)
    assert (e.value.stage, e.value.reason) == ("read", "missing_buffer")


def test_process_asset_rejects_an_escaping_uri(tree):
    tmp_path, _, _ = tree
    gltf, _ = _asset(tmp_path / "esc", uri="%2e%2e/secret.bin", write_bin=False)
    rej = _process_reject(_ref(gltf), tmp_path / "esc")
    assert (rej.stage, rej.reason) == ("read", "unsafe_uri")
    assert SECRET.decode() not in rej.detail and "'../secret.bin'" in rej.detail


# ---------------------------------------------------------------------------------- refused URIs


@pytest.mark.parametrize("uri", [
    "../secret.bin", "../outside/secret.bin", "sub/../../secret.bin", "./../secret.bin",
    "/etc/passwd", "/proc/self/environ", "../../../../etc/passwd", "../../../../proc/self/environ",
    "file:///etc/passwd", "file:/etc/passwd", "http://example.com/x.bin", "s3://bucket/x.bin", "data:,abc",
    "C:/x.bin", "..\\secret.bin", "sub\\buf.bin", "", "buf.bin\0", "\0", "/", ".", "..", "./",
])
def test_uri_outside_or_malformed_is_refused(tree, uri):
    _, read, _ = tree
    err = _refused(read, uri, 100)
    assert "refused" in err.detail


def test_symlinks_are_resolved_against_the_folder(tree):
    tmp_path, read, blob = tree
    asset = tmp_path / "asset"
    os.symlink(tmp_path / "secret.bin", asset / "out.bin")  # inside -> outside
    os.symlink("../secret.bin", asset / "out_rel.bin")
    os.symlink(tmp_path / "outside", asset / "outdir")  # a folder link leaving the asset
    os.symlink("buf.bin", asset / "in.bin")  # inside -> inside (relative)
    os.symlink(asset / "buf.bin", asset / "in_abs.bin")  # inside -> inside (absolute)
    (asset / "sub").mkdir()
    os.symlink("../buf.bin", asset / "sub" / "up.bin")  # up one level, still inside
    os.symlink("loop_b", asset / "loop_a")
    os.symlink("loop_a", asset / "loop_b")
    for uri in ("out.bin", "out_rel.bin", "outdir/secret.bin", "outdir/../secret.bin", "loop_a"):
        _refused(read, uri, 100)
    for uri in ("in.bin", "in_abs.bin", "sub/up.bin", "sub/../in.bin"):
        assert read(uri, len(blob)) == blob, uri


def test_devices_fifos_and_folders_are_refused_fast(tree):
    tmp_path, read, _ = tree
    asset = tmp_path / "asset"
    os.symlink("/dev/zero", asset / "zero.bin")
    os.symlink("/proc/self/environ", asset / "env.bin")
    os.mkfifo(asset / "fifo.bin")  # nobody writes: a blocking open would hang
    (asset / "dir.bin").mkdir()
    t0 = time.monotonic()
    for uri in ("zero.bin", "../../../../dev/zero", "../../../../../../../../dev/zero", "env.bin",
                "fifo.bin", "dir.bin", "dir.bin/", "dir.bin/.."):
        _refused(read, uri, 1 << 30)
        _refused(read, uri, None)
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout(20)
def test_fifo_does_not_block_without_byte_length(tmp_path):
    read, _, _ = _reader(tmp_path / "a")
    os.mkfifo(tmp_path / "a" / "pipe")
    _refused(read, "pipe")


@pytest.mark.parametrize("uri", ["../secret.bin", "../outside/secret.bin", "../x/../secret.bin", "outlink/secret.bin"])
def test_no_existence_oracle_outside_the_folder(tree, uri):
    tmp_path, read, _ = tree
    os.symlink(tmp_path / "outside", tmp_path / "asset" / "outlink")
    present = _refused(read, uri, 64).detail
    (tmp_path / "secret.bin").unlink()
    (tmp_path / "outside" / "secret.bin").unlink()
    assert _refused(read, uri, 64).detail == present
    (tmp_path / "outside").rmdir()  # even the folder it names is gone
    assert _refused(read, uri, 64).detail == present
    # A foreign symlink on the way changes nothing either.
    os.symlink(tmp_path / "asset", tmp_path / "x")
    assert _refused(read, uri, 64).detail == present


def test_a_walk_out_and_back_in_is_refused_before_looking_outside(tree):
    """`../<outside name>/../asset/buf.bin` would reveal whether the outside name is a symlink if
    it were resolved with realpath; it is refused without looking at the outside name."""
    tmp_path, read, blob = tree
    uri = "../x/../asset/buf.bin"
    before = _refused(read, uri, 64).detail
    os.symlink("/", tmp_path / "x")
    assert _refused(read, uri, 64).detail == before
    # Passing through the folder's own ancestors back into it is fine.
    assert read("../asset/buf.bin", len(blob)) == blob


# --------------------------------------------------------------------------------------- sizes


def test_external_file_above_the_limit_is_too_large(tmp_path):
    read, blob, _ = _reader(tmp_path / "a", TINY)
    assert len(blob) < 1048 and read("buf.bin", len(blob)) == blob
    (tmp_path / "a" / "big.bin").write_bytes(b"\1" * 5000)
    for max_bytes in (None, 10, 5000):
        with pytest.raises(AssetError) as e:
            read("big.bin", max_bytes)
        assert (e.value.stage, e.value.reason) == ("read", "too_large")
        assert "limits.max_file_mb=0.001" in e.value.detail


def test_asset_file_above_the_limit_is_refused_before_it_is_read(tmp_path):
    gltf, _ = _asset(tmp_path / "a")
    assert 524 < gltf.stat().st_size < 1048
    sources.fetch(_ref(gltf), sources.SourceConfig(), TINY)
    with pytest.raises(AssetError) as e:
        sources.fetch(_ref(gltf), sources.SourceConfig(), LimitsConfig(max_file_mb=0.0005))
    assert (e.value.stage, e.value.reason) == ("fetch", "too_large")
    assert "limits.max_file_mb=0.0005" in e.value.detail and str(gltf) in e.value.detail
    # A sparse 4 GiB file with the default 512 MiB limit: refused without reading it.
    huge = tmp_path / "huge" / "huge.glb"
    huge.parent.mkdir()
    with open(huge, "wb") as f:
        f.truncate(4 << 30)
    t0 = time.monotonic()
    with pytest.raises(AssetError) as e:
        sources.fetch(_ref(huge), sources.SourceConfig())
    assert time.monotonic() - t0 < 2
    assert (e.value.stage, e.value.reason) == ("fetch", "too_large")
    assert "limits.max_file_mb=512" in e.value.detail
    # The same through process_asset (the fetch stage runs before gltf_io).
    from jobs import config as config_lib
    from pipelines.config import DatasetConfig

    cfg = config_lib.load(DatasetConfig, None, [f"source.path={tmp_path / 'a'}", "limits.max_file_mb=0.0005"])
    (rej,) = process.process_asset(_ref(gltf), cfg, "digest").rejects
    assert (rej.stage, rej.reason) == ("fetch", "too_large") and "limits.max_file_mb" in rej.detail


def test_process_asset_rejects_a_too_large_external_buffer(tmp_path):
    gltf, blob = _asset(tmp_path / "a")
    (tmp_path / "a" / "buf.bin").write_bytes(blob + b"\0" * 5000)
    rej = _process_reject(_ref(gltf), tmp_path / "a", "limits.max_file_mb=0.002")
    assert (rej.stage, rej.reason) == ("read", "too_large") and "limits.max_file_mb" in rej.detail


# ------------------------------------------------------------------------ other filesystems


def test_file_uri_assets_use_the_local_checks(tree):
    tmp_path, _, blob = tree
    assert isinstance(pafs.FileSystem.from_uri((tmp_path / "x").as_uri())[0], pafs.LocalFileSystem)
    os.symlink(tmp_path / "secret.bin", tmp_path / "asset" / "out.bin")
    ref = sources.AssetRef("u", "local", (tmp_path / "asset" / "asset.gltf").as_uri(), "cc0", "u", {})
    _, read = sources.fetch(ref, sources.SourceConfig())
    assert read("buf.bin", len(blob)) == blob
    for uri in ("out.bin", "../secret.bin", "file:///etc/passwd"):
        _refused(read, uri, 64)


@pytest.fixture(params=["memory", "subtree"])
def store(request, tmp_path):
    """An object-store-like filesystem (not a LocalFileSystem) holding bucket/assets/a/{x.gltf,
    buf.bin, sub/}, bucket/assets/a2/buf.bin, bucket/assets/secret.bin, other/secret.bin."""
    gltf, blob = _asset(tmp_path / "src")
    files = {"bucket/assets/a/x.gltf": gltf.read_bytes(), "bucket/assets/a/buf.bin": blob,
             "bucket/assets/a/sub/keep": b"", "bucket/assets/a2/buf.bin": SECRET,
             "bucket/assets/secret.bin": SECRET, "other/secret.bin": SECRET,
             "bucket/assets/a/big.bin": b"\2" * 5000}
    if request.param == "memory":
        top = f"/t{uuid.uuid4().hex}"
        mem = fsspec.filesystem("memory")
        for k, v in files.items():
            mem.pipe(f"{top}/{k}", v)
        fs, prefix = pafs.PyFileSystem(pafs.FSSpecHandler(mem)), top.lstrip("/") + "/"
        yield fs, prefix, blob
        mem.rm(top, recursive=True)
    else:  # SubTreeFileSystem lets ".." out of its root: only the reader's prefix check stops it
        for k, v in files.items():
            (tmp_path / "st" / k).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "st" / k).write_bytes(v)
        fs = pafs.SubTreeFileSystem(str(tmp_path / "st"), pafs.LocalFileSystem())
        assert fs.get_file_info("bucket/assets/a/../../../other/secret.bin").type == pafs.FileType.File
        yield fs, "", blob


def test_object_store_reads_stay_under_the_asset_prefix(store, monkeypatch):
    fs, prefix, blob = store
    uri = "s3://bucket/assets/a/x.gltf"
    monkeypatch.setattr(sources._Filesystems, "resolve", lambda self, u: (fs, prefix + u.removeprefix("s3://")))
    data, read = sources.fetch(sources.AssetRef("u", "local", uri, "cc0", "u", {}), sources.SourceConfig(), TINY)
    assert gltf_io.load_gltf(data, read).buffer(0) == blob
    assert read("buf.bin", 7) == blob[:7]
    assert read("./sub/../buf.bin", len(blob)) == blob
    for bad in ("../secret.bin", "../../../other/secret.bin", "../a2/buf.bin", "sub/../../a2/buf.bin",
                "/other/secret.bin", "s3://other/secret.bin", "sub", "..", "."):
        _refused(read, bad, 64)
    # An existing and a missing key outside the prefix: the same words, only the quoted uri differs.
    assert (_refused(read, "../a2/buf.bin", 64).detail.replace("buf.bin", "X")
            == _refused(read, "../a2/nothing.bin", 64).detail.replace("nothing.bin", "X"))
    with pytest.raises(FileNotFoundError):
        read("nothing.bin", 4)
    with pytest.raises(AssetError) as e:
        read("big.bin", 10)
    assert (e.value.stage, e.value.reason) == ("read", "too_large")


def test_object_store_asset_above_the_limit(store, monkeypatch):
    fs, prefix, _ = store
    monkeypatch.setattr(sources._Filesystems, "resolve", lambda self, u: (fs, prefix + u.removeprefix("s3://")))
    with pytest.raises(AssetError) as e:
        sources.fetch(sources.AssetRef("u", "local", "s3://bucket/assets/a/big.bin", "cc0", "u", {}),
                      sources.SourceConfig(), TINY)
    assert (e.value.stage, e.value.reason) == ("fetch", "too_large")


def test_procedural_reader_takes_the_new_signature():
    (ref,), _ = sources.list_assets(sources.SourceConfig(kind="procedural", count=1, min_faces=0))
    _, read = sources.fetch(ref, sources.SourceConfig(kind="procedural"), LimitsConfig())
    with pytest.raises(FileNotFoundError, match="no external files"):
        read("x.bin", 16)
