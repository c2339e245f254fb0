"""Asset sources: an Objaverse cache laid out as the objaverse package lays it out, and local
folders / lists / file:// URIs, all built in tmp_path from the real animated glTF samples."""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import numpy as np
import objaverse
import pytest

from pipelines import sources
from pipelines.errors import AssetError
from pipelines.gltf_io import load_gltf
from pipelines.sources import AssetRef, SourceConfig, fetch, list_assets, prefetch

GLTF = Path(__file__).resolve().parent / "data" / "gltf"


def _uid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()  # 32 hex characters, like Objaverse uids


# ------------------------------------------------------------------------------ network guard


@pytest.fixture
def no_network(monkeypatch):
    """Any network use fails at once; the download attempts the package makes are recorded."""
    attempts: list[str] = []

    def urlretrieve(url, filename=None, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("network disabled in tests")

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlretrieve", urlretrieve)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture
def spy(monkeypatch):
    """Record calls to the objaverse package's own functions (the originals still run)."""
    calls: list[tuple[str, tuple]] = []
    for name in ("_load_object_paths", "load_annotations", "load_objects"):
        original = getattr(objaverse, name)

        def wrapper(*args, _name=name, _original=original, **kwargs):
            calls.append((_name, args))
            return _original(*args, **kwargs)

        monkeypatch.setattr(objaverse, name, wrapper)
    return calls


# --------------------------------------------------------------------------- objaverse cache


def _annotation(uid: str, name: str, license: str, animations: int, faces: int, vertices: int) -> dict:
    """A record shaped like the real metadata/*.json.gz entries (Sketchfab API fields)."""
    api = "https://api.sketchfab.com/v3"
    return {
        "uri": f"{api}/models/{uid}",
        "uid": uid,
        "name": name,
        "staffpickedAt": None,
        "viewCount": 12,
        "likeCount": 1,
        "animationCount": animations,
        "viewerUrl": f"https://sketchfab.com/3d-models/{uid}",
        "embedUrl": f"https://sketchfab.com/models/{uid}/embed",
        "commentCount": 0,
        "isDownloadable": True,
        "publishedAt": "2021-03-18T09:36:25.430631",
        "tags": [{"name": "character", "slug": "character", "uri": f"{api}/tags/character"}],
        "categories": [],
        "thumbnails": {"images": [{"uid": uid[:8] * 4, "size": 550, "width": 64, "height": 36,
                                   "url": f"https://media.sketchfab.com/models/{uid}/thumbnails/x.jpeg"}]},
        "user": {"uid": "b50b409d636f4a8e9af2111d370786bf", "username": "artist", "displayName": "An Artist",
                 "profileUrl": "https://sketchfab.com/artist", "account": "basic", "avatar": {"images": []},
                 "uri": f"{api}/users/b50b409d636f4a8e9af2111d370786bf"},
        "description": "",
        # Top-level counts describe the uploaded source; archives.glb the converted glb.
        "faceCount": min(faces, 1000),
        "createdAt": "2021-03-18T09:31:52.190927",
        "vertexCount": min(vertices, 1000),
        "isAgeRestricted": False,
        "archives": {
            "glb": {"textureCount": 0, "size": 1000, "type": "glb", "textureMaxResolution": None,
                    "faceCount": faces, "vertexCount": vertices},
            "source": {"textureCount": None, "size": 900, "type": "source", "textureMaxResolution": None,
                       "faceCount": None, "vertexCount": None},
        },
        "license": license,
    }


# name -> (shard, license, animationCount, glb faceCount, glb vertexCount, sample file or None = not cached)
OBJECTS = {
    "walker": ("000-000", "by", 1, 4_000, 3_300, "CesiumMan.glb"),
    "statue": ("000-000", "by", 0, 4_000, 3_300, "RiggedSimple.glb"),
    "nc_dancer": ("000-000", "by-nc", 2, 4_000, 3_300, "RiggedFigure.glb"),
    "box": ("000-001", "cc0", 2, 500, 600, "BoxAnimated.glb"),
    "huge": ("000-001", "by-sa", 1, 2_000_000, 900_000, "SimpleSkin.glb"),  # top-level counts are small
    "dense": ("000-001", "by", 1, 1_000, 900_000, "SimpleMorph.glb"),
    "triangle": ("000-001", "cc0", 1, 1, 3, "AnimatedTriangle.glb"),
    "far_away": ("000-001", "by", 1, 2_000, 2_000, None),
}
EXPECTED_REJECTS = {
    "statue": "no_animation",
    "nc_dancer": "license_not_allowed",
    "huge": "too_many_faces",
    "dense": "too_many_vertices",
    "triangle": "too_few_faces",
}
KEPT = ["walker", "box", "far_away"]


@pytest.fixture
def cache(tmp_path) -> Path:
    """~/.objaverse as objaverse 0.1.7 lays it out, under tmp_path/objaverse."""
    base = tmp_path / "objaverse"
    root = base / "hf-objaverse-v1"
    (root / "metadata").mkdir(parents=True)
    paths, metadata = {}, {}
    for name, (shard, lic, anim, faces, verts, sample) in OBJECTS.items():
        uid = _uid(name)
        paths[uid] = f"glbs/{shard}/{uid}.glb"
        metadata.setdefault(shard, {})[uid] = _annotation(uid, name, lic, anim, faces, verts)
        if sample:
            (root / "glbs" / shard).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(GLTF / sample, root / paths[uid])
    # An object whose metadata file is not in the cache (only read when asked for).
    paths[_uid("unlisted")] = f"glbs/000-002/{_uid('unlisted')}.glb"
    with gzip.open(root / "object-paths.json.gz", "wt") as f:
        json.dump(paths, f)
    for shard, records in metadata.items():
        with gzip.open(root / "metadata" / f"{shard}.json.gz", "wt") as f:
            json.dump(records, f)
    return base


def _ocfg(cache: Path, **kw) -> SourceConfig:
    return SourceConfig(kind="objaverse", path=str(cache), **kw)


def test_objaverse_filters_on_annotations(cache, no_network, spy):
    saved = objaverse.BASE_PATH, objaverse._VERSIONED_PATH
    refs, rejects = list_assets(_ocfg(cache, uids=[_uid(n) for n in OBJECTS]))
    assert [r.uid for r in refs] == sorted(_uid(n) for n in KEPT)
    assert {r.uid: r.reason for r in rejects} == {_uid(n): reason for n, reason in EXPECTED_REJECTS.items()}
    assert all(r.stage == "curate" and r.sample_id == "" for r in rejects)
    assert [r.uid for r in rejects] == sorted(r.uid for r in rejects)
    walker = next(r for r in refs if r.uid == _uid("walker"))
    assert (walker.source, walker.uri, walker.license, walker.name) == (
        "objaverse", f"glbs/000-000/{_uid('walker')}.glb", "by", "walker")
    assert walker.meta["faceCount"] == 4_000 and walker.meta["animationCount"] == 1
    assert AssetRef(**json.loads(json.dumps(asdict(walker)))) == walker  # how the job ships refs to workers
    # The package's own readers did the work, against this cache, with no network use.
    names = {c[0] for c in spy}
    assert {"_load_object_paths", "load_annotations"} <= names
    assert no_network == []
    assert (objaverse.BASE_PATH, objaverse._VERSIONED_PATH) == saved  # module state restored


def test_objaverse_whole_cache_limit_and_unknown_uid(cache, no_network):
    # Without an allow-list every uid of object-paths is a candidate: the one whose metadata
    # file is absent makes the package try to download it, which is a job-level error.
    with pytest.raises(FileNotFoundError, match="000-002"):
        list_assets(_ocfg(cache))
    assert len(no_network) == 1 and no_network[0].endswith("metadata/000-002.json.gz")

    refs, _ = list_assets(_ocfg(cache, uids=[_uid(n) for n in OBJECTS], limit=1))
    assert [r.uid for r in refs] == [_uid("walker")]  # the only kept asset of the first metadata file
    refs, rejects = list_assets(_ocfg(cache, uids=[_uid("box"), _uid("statue"), "f" * 32]))
    assert [r.uid for r in refs] == [_uid("box")]
    assert {r.uid: r.reason for r in rejects} == {_uid("statue"): "no_animation", "f" * 32: "unknown_uid"}
    assert list_assets(_ocfg(cache, uids=[_uid(n) for n in OBJECTS])) == list_assets(
        _ocfg(cache, uids=[_uid(n) for n in reversed(OBJECTS)]))


def test_objaverse_fetch_reads_cached_bytes(cache, no_network, spy):
    refs, _ = list_assets(_ocfg(cache, uids=[_uid(n) for n in OBJECTS]))
    walker = next(r for r in refs if r.uid == _uid("walker"))
    data, read_external = fetch(walker, _ocfg(cache))
    assert data == (GLTF / "CesiumMan.glb").read_bytes()
    assert ("load_objects", ([walker.uid],)) in spy
    assert no_network == []
    assert prefetch([walker], _ocfg(cache)) == {walker.uid: str(cache / "hf-objaverse-v1" / walker.uri)}


def test_objaverse_uncached_fails_fast(cache, no_network):
    refs, _ = list_assets(_ocfg(cache, uids=[_uid("far_away")]))
    t0 = time.monotonic()
    with pytest.raises(AssetError) as e:
        fetch(refs[0], _ocfg(cache))
    assert time.monotonic() - t0 < 5
    assert (e.value.stage, e.value.reason) == ("fetch", "fetch_failed")
    assert _uid("far_away") in e.value.detail and "not in the cache" in e.value.detail
    assert len(no_network) == 1 and no_network[0].startswith("https://huggingface.co/")  # the package tried


def test_objaverse_missing_cache(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_assets(SourceConfig(kind="objaverse", path=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="object-paths.json.gz is missing"):
        list_assets(SourceConfig(kind="objaverse", path=str(tmp_path / "empty")))


# ------------------------------------------------------------------------------------- local


def _copy(src: str, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GLTF / src, dst)
    return dst


def _lcfg(path, **kw) -> SourceConfig:
    return SourceConfig(kind="local", path=str(path), **kw)


def test_local_folder_nested(tmp_path, no_network):
    root = tmp_path / "assets"
    _copy("BoxAnimated.glb", root / "Box.glb")
    walker = _copy("CesiumMan.gltf", root / "people" / "walking" / "Walker.gltf")
    _copy("SimpleSkin.glb", root / "people" / "Skin.glb")
    (root / "people" / "Skin.meta.json").write_text(json.dumps({"license": "cc0", "name": "skin", "animationCount": 1}))
    _copy("SimpleMorph.glb", root / "Morph.glb")
    (root / "Morph.meta.json").write_text(json.dumps({"license": "by-nc"}))
    (root / "README.md").write_text("not an asset")
    (root / "legacy.fbx").write_bytes(b"Kaydara FBX Binary")
    _copy("BoxAnimated.glb", root / "._Box.glb")  # macOS resource fork name: skipped
    refs, rejects = list_assets(_lcfg(root))
    assert [r.uid for r in refs] == ["Box", "people__Skin", "people__walking__Walker"]
    assert [(r.uid, r.reason) for r in rejects] == [("Morph", "license_not_allowed"), ("legacy", "unsupported_extension")]
    skin = refs[1]
    assert (skin.license, skin.name, skin.meta) == ("cc0", "skin", {"animationCount": 1})
    assert refs[0].license == "unknown" and refs[2].uri == str(walker)
    data, _ = fetch(refs[2], _lcfg(root))
    assert data == (GLTF / "CesiumMan.gltf").read_bytes()
    assert list_assets(_lcfg(root)) == (refs, rejects)
    assert [r.uid for r in list_assets(_lcfg(root, limit=2))[0]] == ["Box", "people__Skin"]
    # Strict licences drop unlabelled files; an allow-list reports what it left out.
    assert [r.uid for r in list_assets(_lcfg(root, licenses=["cc0"]))[0]] == ["people__Skin"]
    refs, rejects = list_assets(_lcfg(root, uids=["Box", "ghost"]))
    assert [r.uid for r in refs] == ["Box"]
    assert {(r.uid, r.reason) for r in rejects} >= {("ghost", "unknown_uid"), ("people__Skin", "not_in_uid_list")}


def test_local_list_file(tmp_path, no_network):
    root = tmp_path / "data"
    _copy("RiggedSimple.glb", root / "sub" / "Rigged.glb")
    other = _copy("SimpleMorph.gltf", tmp_path / "other" / "Morph.gltf")
    absolute = _copy("AnimatedTriangle.glb", tmp_path / "abs" / "Tri.glb")
    lst = root / "assets.txt"
    lst.write_text(
        "# animated assets\n\n"
        "sub/Rigged.glb\n"
        "  ../other/Morph.gltf  \n"
        f"{absolute}\n"
        "# sub/Commented.glb\n"
        "legacy/thing.obj\n"
        "sub/missing.glb\n"
    )
    refs, rejects = list_assets(_lcfg(lst))
    uid_tail = {r.uid: r for r in refs}
    assert set(uid_tail) == {"sub__Rigged", _uidpath(other), _uidpath(absolute)}
    assert uid_tail["sub__Rigged"].uri == str(root / "sub" / "Rigged.glb")
    assert [(r.uid, r.reason) for r in rejects] == [("legacy__thing", "unsupported_extension"), ("sub__missing", "file_not_found")]
    for r in refs:
        assert fetch(r, _lcfg(lst))[0] == Path(r.uri).read_bytes()


def _uidpath(p: Path) -> str:
    return str(p.with_suffix("")).lstrip("/").replace("/", "__")


def test_local_file_uri_via_pyarrow(tmp_path, no_network):
    root = tmp_path / "my assets"  # a space: URIs are percent-encoded
    _copy("BoxAnimated.glb", root / "a" / "Box.glb")
    _copy("RiggedFigure.glb", root / "Figure.glb")
    refs, _ = list_assets(_lcfg(root.as_uri()))
    assert [r.uid for r in refs] == ["Figure", "a__Box"]
    assert refs[1].uri == (root / "a" / "Box.glb").as_uri() and refs[1].uri.startswith("file:///")
    assert fetch(refs[1], _lcfg(root.as_uri()))[0] == (GLTF / "BoxAnimated.glb").read_bytes()
    lst = root / "list.txt"
    lst.write_text("a/Box.glb\n")
    refs, _ = list_assets(_lcfg(lst.as_uri()))
    assert [(r.uid, r.uri) for r in refs] == [("a__Box", (root / "a" / "Box.glb").as_uri())]


def test_gltf_external_buffer_through_reader(tmp_path, no_network):
    gltf = json.loads((GLTF / "SimpleMorph.gltf").read_text())
    blobs = {}
    for i, buf in enumerate(gltf["buffers"]):
        blobs[i] = base64.b64decode(buf["uri"].split(",", 1)[1])
        name = f"morph data {i}.bin"
        (tmp_path / "m" / "buffers").mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / "buffers" / name).write_bytes(blobs[i])
        buf["uri"] = "buffers/" + name.replace(" ", "%20")
    (tmp_path / "m" / "Morph.gltf").write_text(json.dumps(gltf))
    for path in (tmp_path / "m", (tmp_path / "m").as_uri()):
        (ref,), _ = list_assets(_lcfg(path))
        data, read_external = fetch(ref, _lcfg(path))
        # The glTF reader URL-decodes the uri and reads the buffers through read_external.
        g = load_gltf(data, read_external)
        assert [g.buffer(i) for i in range(len(blobs))] == [blobs[i] for i in range(len(blobs))]
        with pytest.raises(FileNotFoundError, match="missing.bin"):
            read_external("buffers/missing.bin")
        for bad in ("/etc/hostname", "file:///etc/hostname"):
            with pytest.raises(AssetError) as e:
                read_external(bad, 16)
            assert (e.value.stage, e.value.reason) == ("read", "unsafe_uri")


def test_local_uid_collision_and_missing_sources(tmp_path, no_network):
    _copy("BoxAnimated.glb", tmp_path / "c" / "Robot.glb")
    _copy("BoxAnimated.gltf", tmp_path / "c" / "Robot.gltf")
    with pytest.raises(ValueError, match=r"Robot\.glb.*Robot\.gltf|Robot\.gltf.*Robot\.glb"):
        list_assets(_lcfg(tmp_path / "c"))
    _copy("BoxAnimated.glb", tmp_path / "d" / "a" / "b.glb")
    _copy("BoxAnimated.glb", tmp_path / "d" / "a__b.glb")
    with pytest.raises(ValueError, match="a__b"):
        list_assets(_lcfg(tmp_path / "d"))

    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_assets(_lcfg(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_assets(_lcfg((tmp_path / "nowhere").as_uri()))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .glb/.gltf"):
        list_assets(_lcfg(tmp_path / "empty"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no .glb/.gltf"):
        list_assets(_lcfg(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="empty"):
        list_assets(SourceConfig(kind="local", path=""))

    ref = AssetRef("gone", "local", str(tmp_path / "gone.glb"), "unknown", "gone", {})
    with pytest.raises(AssetError) as e:
        fetch(ref, SourceConfig())
    assert (e.value.stage, e.value.reason) == ("fetch", "fetch_failed") and "gone.glb" in e.value.detail


def test_bad_sidecar_is_a_reject(tmp_path, no_network):
    _copy("BoxAnimated.glb", tmp_path / "s" / "Box.glb")
    (tmp_path / "s" / "Box.meta.json").write_text("{not json")
    _copy("SimpleSkin.glb", tmp_path / "s" / "Skin.glb")
    (tmp_path / "s" / "Skin.meta.json").write_text(json.dumps({"faceCount": "many"}))
    refs, rejects = list_assets(_lcfg(tmp_path / "s"))
    assert refs == [] and [(r.uid, r.reason) for r in rejects] == [("Box", "bad_metadata"), ("Skin", "bad_metadata")]
    assert sources.SIDECAR_SUFFIX in rejects[0].detail


def test_objaverse_asset_goes_through_every_stage(cache, no_network):
    """A cached Objaverse GLB, listed and fetched by the package, becomes a complete clip row."""
    from jobs import config as config_lib
    from pipelines import process
    from pipelines.config import DatasetConfig

    cfg = config_lib.load(DatasetConfig, None, [
        "source.kind=objaverse", f"source.path={cache}", f"source.uids=[{_uid('walker')}]", "num_frames=3", "num_surface_points=256",
        "num_sharp_points=32", "num_queries=16", "queries.num_candidates=512", "watertight.resolution=32",
        "sdf.num_volume=64", "sdf.num_near=96", "render.resolution=32",
    ])
    (walker,), _ = list_assets(cfg.source)
    result = process.process_asset(walker, cfg, "digest")
    assert result.rejects == []
    (row,) = result.rows
    assert row["uid"] == walker.uid and row["license"] == "by" and row["source"] == "objaverse"
    assert row["source_sha256"] == hashlib.sha256((GLTF / "CesiumMan.glb").read_bytes()).hexdigest()
    assert row["surface"].shape == (3, 256, 6) and row["queries"].shape == (3, 16, 6) and len(row["video"]) == 3
    assert no_network == []


# ------------------------------------------------------------------------------------ procedural


def _pcfg(**kw) -> SourceConfig:
    return SourceConfig(kind="procedural", **kw)


def test_procedural_listing_count_families_and_metadata(no_network):
    from pipelines import procedural

    refs, rejects = list_assets(_pcfg(seed=3, count=12))
    assert rejects == [] and len(refs) == 12
    assert [r.uid for r in refs] == sorted(r.uid for r in refs)
    # Asset i belongs to families[i % 5] and is named after (family, seed, i).
    expect = {procedural.asset_uid(procedural.FAMILIES[i % 5], 3, i) for i in range(12)}
    assert {r.uid for r in refs} == expect
    tube = next(r for r in refs if r.uid == "proc-tube-3-00005")
    spec = procedural.asset_spec("tube", 3, 5)
    assert (tube.source, tube.uri, tube.license) == ("procedural", "procedural://tube/3/5", "cc0")
    assert tube.meta["faceCount"] == spec.num_faces and tube.meta["vertexCount"] == spec.num_vertices
    assert tube.meta["animationCount"] == 1 and tube.meta["family"] == "tube"
    assert AssetRef(**json.loads(json.dumps(asdict(tube)))) == tube  # how the job ships refs to workers
    assert list_assets(_pcfg(seed=3, count=12)) == (refs, rejects)  # listing is deterministic

    only = list_assets(_pcfg(seed=3, count=6, families=["wave", "blob"]))[0]
    assert [r.uid for r in only] == ["proc-blob-3-00001", "proc-blob-3-00003", "proc-blob-3-00005",
                                     "proc-wave-3-00000", "proc-wave-3-00002", "proc-wave-3-00004"]
    assert [r.uid for r in list_assets(_pcfg(count=50, limit=3))[0]] == [
        "proc-blob-0-00001", "proc-figure-0-00002", "proc-tube-0-00000"]  # the first 3 indices, sorted


def test_procedural_filters_and_uid_list(no_network):
    from pipelines import procedural

    faces = {i: procedural.asset_spec(procedural.FAMILIES[i % 5], 0, i).num_faces for i in range(10)}
    cut = sorted(faces.values())[5]
    refs, rejects = list_assets(_pcfg(count=10, max_faces=cut))
    assert {r.meta["index"] for r in refs} == {i for i, f in faces.items() if f <= cut}
    assert {r.reason for r in rejects} == {"too_many_faces"} and len(refs) + len(rejects) == 10
    refs, rejects = list_assets(_pcfg(count=4, licenses=["by"]))
    assert refs == [] and {r.reason for r in rejects} == {"license_not_allowed"}
    refs, rejects = list_assets(_pcfg(count=4, min_faces=10**6))
    assert refs == [] and {r.reason for r in rejects} == {"too_few_faces"}
    refs, rejects = list_assets(_pcfg(count=5, uids=["proc-split-0-00003", "proc-tube-0-00999"]))
    assert [r.uid for r in refs] == ["proc-split-0-00003"]
    reasons = {r.uid: r.reason for r in rejects}
    assert reasons.pop("proc-tube-0-00999") == "unknown_uid"
    assert set(reasons.values()) == {"not_in_uid_list"} and len(reasons) == 4
    for bad, match in ((dict(families=["cloud"]), "unknown procedural families"), (dict(count=0), "count"),
                       (dict(seed=-1), "seed"), (dict(families=["tube", "tube"]), "twice")):
        with pytest.raises(ValueError, match=match):
            list_assets(_pcfg(**bad))


def test_procedural_fetch_builds_the_asset(no_network):
    from pipelines import procedural

    (ref,), _ = list_assets(_pcfg(count=3, uids=["proc-figure-0-00002"]))
    data, read_external = fetch(ref, SourceConfig())  # the uri alone defines the asset
    assert data == procedural.build_asset("figure", 0, 2).glb
    g = load_gltf(data, read_external)
    assert len(g.items("meshes")) == 2 + sum(len(limb["segments"]) for limb in procedural.asset_spec("figure", 0, 2).params["limbs"])
    with pytest.raises(FileNotFoundError, match="no external files"):
        read_external("x.bin")
    for uri in ("procedural://figure/0/3", "procedural://figure/zero/2", "local://figure/0/2"):
        with pytest.raises(AssetError) as e:
            fetch(AssetRef(ref.uid, "procedural", uri, "cc0", "", {}), SourceConfig())
        assert (e.value.stage, e.value.reason) == ("fetch", "fetch_failed"), uri


def test_procedural_cli_output_is_the_same_local_source(tmp_path, no_network):
    from pipelines import procedural

    procedural.write_random(tmp_path, 5, seed=2)
    local, _ = list_assets(_lcfg(tmp_path))
    generated, _ = list_assets(_pcfg(seed=2, count=5))
    assert [(r.uid, r.license, r.meta["faceCount"]) for r in local] == [(r.uid, r.license, r.meta["faceCount"]) for r in generated]
    assert all(fetch(a, _lcfg(tmp_path))[0] == fetch(b, SourceConfig())[0] for a, b in zip(local, generated))


def test_procedural_assets_go_through_every_stage(no_network):
    """Two generated assets (a skinned tube, splitting parts) become complete clip rows."""
    from jobs import config as config_lib
    from pipelines import process, procedural
    from pipelines.config import DatasetConfig

    cfg = config_lib.load(DatasetConfig, None, [
        "source.kind=procedural", "source.count=10", "source.uids=[proc-tube-0-00000, proc-split-0-00003]",
        "num_frames=3", "num_surface_points=256", "num_sharp_points=32", "num_queries=16", "queries.num_candidates=512",
        "watertight.resolution=32", "watertight.min_component_ratio=0.05", "sdf.num_volume=64", "sdf.num_near=96",
        "render.resolution=32",
    ])
    refs, rejects = list_assets(cfg.source)
    assert [r.uid for r in refs] == ["proc-split-0-00003", "proc-tube-0-00000"] and len(rejects) == 8
    for ref in refs:
        result = process.process_asset(ref, cfg, "digest")
        assert result.rejects == [], result.rejects
        (row,) = result.rows
        assert row["uid"] == ref.uid and row["license"] == "cc0" and row["source"] == "procedural"
        glb = procedural.build_uid(ref.uid).glb
        assert row["source_sha256"] == hashlib.sha256(glb).hexdigest()
        assert row["surface"].shape == (3, 256, 6) and row["queries"].shape == (3, 16, 6) and len(row["video"]) == 3
        assert row["stats"]["motion_max"] > 0.05 and all(row["stats"]["watertight"])
        assert np.ptp(row["queries"][:, :, :3], axis=0).max() > 0.05  # the aligned queries move with the shape
