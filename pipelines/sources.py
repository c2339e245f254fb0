"""Asset sources: list candidate assets cheaply on the driver, fetch one asset inside a worker.

`list_assets(cfg)` never opens an asset file: it filters on metadata only (Objaverse
annotations, or an optional sidecar next to a local file) and returns the kept `AssetRef`s
and a `Reject` (stage "curate") for every asset it filtered out, both sorted by uid.
`fetch(ref, cfg, limits)` returns the asset's bytes and a reader for the files a .gltf refers to.

kind "objaverse" (Objaverse 1.0 through the pinned `objaverse` 0.1.7 package)
  `path` is the cache folder holding `hf-objaverse-v1/` ("" = the package default, ~/.objaverse).
  Layout, as the package writes it: `hf-objaverse-v1/object-paths.json.gz` (uid -> "glbs/<shard>/<uid>.glb"),
  `hf-objaverse-v1/metadata/<shard>.json.gz` (uid -> annotation), `hf-objaverse-v1/glbs/<shard>/<uid>.glb`.
  The package reads that cache and downloads only what is missing from it. uid = the Objaverse uid,
  uri = the glb path relative to `hf-objaverse-v1/`.

kind "local" (any pyarrow filesystem: a plain path, or a URI such as file:///..., s3://..., gs://...)
  `path` is a folder (searched recursively for *.glb / *.gltf; names starting with "." are skipped,
  e.g. macOS "._x.glb" files), a text list (one path or URI per line; blank lines and lines starting
  with "#" are ignored; relative entries are resolved against the list's folder), or one .glb/.gltf.
  uid = the path relative to the folder (the list's folder for a relative list entry inside it; the
  full path, without its leading "/", for any other entry), extension dropped, "/" replaced by "__":
  `chars/robot.glb` -> `chars__robot`. Two assets with one uid are an error naming both files.
  Optional sidecar `<asset path without extension>.meta.json`: a JSON object with any of `name`,
  `license`, `animationCount`, `vertexCount`, `faceCount`, filtered like Objaverse annotations.
  A local asset without a sidecar license gets license "unknown".

kind "procedural" (generated in memory by `pipelines.procedural`; nothing is read from disk)
  `count` assets, asset i of family `families[i % len(families)]` (`families` [] = all five:
  tube, blob, figure, split, wave), each a pure function of (family, `seed`, i): uid
  `proc-<family>-<seed>-<i:05d>`, uri `procedural://<family>/<seed>/<i>`, license "cc0". Listing
  draws only the parameters (cheap) and states animationCount/faceCount/vertexCount, so the
  metadata filters, `uids` and `limit` (in index order) work as for local assets; `fetch` writes
  the GLB, and the same uid gives the same bytes everywhere. `path` is not used.

Metadata checks, first failing one recorded: no_animation, license_not_allowed, too_few_faces,
too_many_faces, too_many_vertices. A count the metadata does not state is not checked (the bake
stage still rejects a file without animation). Other curate reasons: not_in_uid_list (a local
asset outside `uids`), unknown_uid (a `uids` entry no asset has), no_annotation (an Objaverse uid
without a metadata record), bad_metadata (an unreadable sidecar), file_not_found (a list entry
that does not exist), unsupported_extension (a listed file, or a 3D file in a folder, that is
not .glb/.gltf). A missing or empty source is a job-level FileNotFoundError / ValueError.

Reads (the asset and the files it names are untrusted). `fetch` refuses an asset file above
`limits.max_file_mb` (stage "fetch", reason too_large; its size is checked before it is read);
other fetch failures are fetch_failed. The reader `read(uri, max_bytes)` of a .gltf's external
buffers (gltf_io passes the URL-decoded uri and the buffer's declared byteLength) returns at most
max_bytes bytes, and raises stage "read" reasons:
  unsafe_uri  the uri is empty, absolute, has a scheme (file:, http:, ...), holds a NUL byte or a
              backslash, leaves the asset's folder (local disk: symlinks resolved; object stores:
              its key prefix), or does not name a regular file (directory, FIFO, device). The
              detail quotes the uri only: nothing about what exists outside the folder.
  too_large   the file is above limits.max_file_mb.
A regular file that is missing inside the folder is a FileNotFoundError (gltf_io: missing_buffer).
"""
from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import posixpath
import re
import socket
import stat
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import objaverse
import pyarrow.fs as pafs

from pipelines import procedural
from pipelines.errors import AssetError
from pipelines.limits import LimitsConfig
from pipelines.records import Reject

# Objaverse annotations carry Sketchfab's license slugs: "by", "by-sa", "by-nd", "by-nc",
# "by-nc-sa", "by-nc-nd", "cc0" (CC 4.0 / CC0). The default keeps the ones that allow commercial
# use and derivatives, plus "unknown" (an unlabelled local file): drop it to require a label.
DEFAULT_LICENSES = ("by", "by-sa", "cc0", "unknown")
ASSET_EXTENSIONS = (".glb", ".gltf")
# 3D formats a folder may hold that this pipeline does not read: counted as unsupported_extension.
# Every other file in a folder (textures, .bin buffers, docs, sidecars) is an asset's support file.
OTHER_3D_EXTENSIONS = (".fbx", ".obj", ".dae", ".blend", ".usd", ".usda", ".usdc", ".usdz",
                       ".stl", ".ply", ".3ds", ".abc", ".x3d", ".max", ".ma", ".mb")
SIDECAR_SUFFIX = ".meta.json"
# load_annotations re-reads object-paths.json.gz (~2 s for 800k uids) on every call, and holds
# every record of the metadata files it reads; 10 of the 160 files per call bounds both.
_METADATA_FILES_PER_CALL = 10
# fetch's reader of a .gltf's external files: read(rel, max_bytes=None) -> at most max_bytes bytes.
ExternalReader = Callable[..., bytes]  # read(rel: str, max_bytes: int | None = None) -> bytes


@dataclass
class SourceConfig:
    kind: Literal["local", "objaverse", "procedural"] = "local"
    # local: folder, list file or one .glb/.gltf (path or pyarrow URI);
    # objaverse: the cache folder holding hf-objaverse-v1/ ("" = the package default ~/.objaverse).
    path: str = ""
    uids: list[str] = field(default_factory=list)  # allow-list; [] = every asset
    # Stop after this many kept assets (0 = all). Local assets are examined in uid order,
    # Objaverse ones in (metadata file, uid) order so a small limit reads few metadata files.
    limit: int = 0
    max_vertices: int = 500_000  # 0 = no bound; glTF splits vertices at seams, so above max_faces
    max_faces: int = 300_000  # 0 = no bound; watertight/SDF cost grows with it (docs/design.md)
    min_faces: int = 100  # below this an asset is too crude to learn shape from
    licenses: list[str] = field(default_factory=lambda: list(DEFAULT_LICENSES))
    require_animation: bool = True
    # Objaverse downloads: processes used by `prefetch` (fetch downloads one uid, in-process),
    # and a socket timeout so a stalled download fails instead of hanging (urlretrieve has none).
    download_processes: int = 1
    download_timeout_s: float = 120.0
    # procedural: `count` generated assets of `families` ([] = all), parameters seeded by `seed`.
    seed: int = 0
    count: int = 256
    families: list[str] = field(default_factory=list)


@dataclass
class AssetRef:
    uid: str
    source: str  # "objaverse" | "local" | "procedural"
    uri: str  # objaverse: glb path relative to hf-objaverse-v1/; local: absolute path or URI; procedural://family/seed/index
    license: str
    name: str
    meta: dict[str, Any] = field(default_factory=dict)  # small and JSON-serialisable (travels to workers)


def _reject(uid: str, reason: str, detail: str = "") -> Reject:
    """An asset filtered out on metadata: a whole-asset reject of stage "curate"."""
    return Reject(uid=uid, sample_id="", stage="curate", reason=reason, detail=detail)


def list_assets(cfg: SourceConfig) -> tuple[list[AssetRef], list[Reject]]:
    """Candidate assets that pass the metadata filters, and a reject for each one that does not."""
    if cfg.kind == "objaverse":
        refs, rejects = _list_objaverse(cfg)
    elif cfg.kind == "local":
        refs, rejects = _list_local(cfg)
    elif cfg.kind == "procedural":
        refs, rejects = _list_procedural(cfg)
    else:
        raise ValueError(f"source.kind must be 'objaverse', 'local' or 'procedural', got {cfg.kind!r}")
    return sorted(refs, key=lambda r: r.uid), sorted(rejects, key=lambda r: (r.uid, r.reason))


def fetch(ref: AssetRef, cfg: SourceConfig, limits: LimitsConfig | None = None) -> tuple[bytes, ExternalReader]:
    """The asset's bytes and a reader for its external files (URIs relative to the asset).

    The asset and each external file are refused above `limits.max_file_mb` (None = defaults);
    the reader only reads regular files inside the asset's folder (module doc, "Reads")."""
    limits = limits or LimitsConfig()
    if ref.source == "objaverse":
        return _fetch_objaverse(ref, cfg, limits)
    if ref.source == "local":
        try:
            fs, path = _Filesystems().resolve(ref.uri)
            data = _read_asset(fs, path, ref.uri, limits)
        except (OSError, ValueError) as e:  # pyarrow: OSError subclasses; ArrowInvalid (a bad URI) is a ValueError
            raise AssetError("fetch", "fetch_failed", f"{ref.uri}: {e}") from e
        return data, _external_reader(fs, posixpath.dirname(path), ref.uri, limits)
    if ref.source == "procedural":
        return _fetch_procedural(ref)
    raise ValueError(f"unknown asset source {ref.source!r} (uid {ref.uid})")


def prefetch(refs: list[AssetRef], cfg: SourceConfig) -> dict[str, str]:
    """Download the listed Objaverse assets into the cache ahead of a job; uid -> local path."""
    uids = [r.uid for r in refs if r.source == "objaverse"]
    # The package's Pool workers inherit the cache folder set below only when forked.
    if cfg.download_processes > 1 and multiprocessing.get_start_method() != "fork":
        raise ValueError("source.download_processes > 1 needs the 'fork' start method (objaverse reads its cache "
                         f"folder from a module attribute); this process uses {multiprocessing.get_start_method()!r}")
    with _objaverse_cache(cfg):
        return objaverse.load_objects(uids, download_processes=max(cfg.download_processes, 1))


# ---------------------------------------------------------------------------------------- checks


def _curate(uid: str, license: str, meta: dict[str, Any], cfg: SourceConfig) -> Reject | None:
    anim, faces, verts = meta.get("animationCount"), meta.get("faceCount"), meta.get("vertexCount")
    if cfg.require_animation and anim is not None and anim <= 0:
        return _reject(uid, "no_animation", f"animationCount={anim}")
    if license not in cfg.licenses:
        return _reject(uid, "license_not_allowed", f"license {license!r} not in {list(cfg.licenses)}")
    if faces is not None and faces < cfg.min_faces:
        return _reject(uid, "too_few_faces", f"faceCount={faces} < {cfg.min_faces}")
    if faces is not None and cfg.max_faces and faces > cfg.max_faces:
        return _reject(uid, "too_many_faces", f"faceCount={faces} > {cfg.max_faces}")
    if verts is not None and cfg.max_vertices and verts > cfg.max_vertices:
        return _reject(uid, "too_many_vertices", f"vertexCount={verts} > {cfg.max_vertices}")
    return None


def _counts(record: dict[str, Any]) -> dict[str, int | None]:
    """animationCount/faceCount/vertexCount of an annotation or sidecar; ValueError if not integers."""
    out: dict[str, int | None] = {}
    for key in ("animationCount", "faceCount", "vertexCount"):
        v = record.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{key} must be an integer, got {v!r}")
        out[key] = v
    return out


# ------------------------------------------------------------------------------------- objaverse


_OBJAVERSE_LOCK = threading.RLock()


@contextlib.contextmanager
def _objaverse_cache(cfg: SourceConfig) -> Iterator[str]:
    """Run objaverse package calls against cfg.path; yields the hf-objaverse-v1 folder.

    objaverse 0.1.7 has no cache-folder parameter: every function builds its paths at call
    time from the module attribute `_VERSIONED_PATH` (set from `BASE_PATH` at import). The
    narrowest way to honour a configured folder is to set both for the span of the call and
    restore them after; the lock stops two threads of one process from seeing each other's.
    The socket default timeout is set for the same span (see `download_timeout_s`).
    """
    with _OBJAVERSE_LOCK:
        saved = objaverse.BASE_PATH, objaverse._VERSIONED_PATH, socket.getdefaulttimeout()
        try:
            if cfg.path:
                base = os.path.abspath(os.path.expanduser(cfg.path))
                objaverse.BASE_PATH = base
                objaverse._VERSIONED_PATH = os.path.join(base, "hf-objaverse-v1")
            socket.setdefaulttimeout(cfg.download_timeout_s or None)
            yield objaverse._VERSIONED_PATH
        finally:
            objaverse.BASE_PATH, objaverse._VERSIONED_PATH = saved[:2]
            socket.setdefaulttimeout(saved[2])


def _list_objaverse(cfg: SourceConfig) -> tuple[list[AssetRef], list[Reject]]:
    if cfg.path and not os.path.isdir(os.path.expanduser(cfg.path)):
        raise FileNotFoundError(f"objaverse cache folder {cfg.path!r} does not exist (source.path; it holds hf-objaverse-v1/)")
    with _objaverse_cache(cfg) as root:
        paths_file = os.path.join(root, "object-paths.json.gz")
        had_file = os.path.exists(paths_file)
        try:
            # What objaverse.load_uids() reads; called directly because the paths are needed too.
            object_paths: dict[str, str] = objaverse._load_object_paths()
        except OSError as e:  # URLError when offline, BadGzipFile, ...
            state = "is unreadable" if had_file else "is missing and could not be downloaded"
            raise FileNotFoundError(f"objaverse cache {root}: {paths_file} {state}: {e}") from e
        if not object_paths:
            raise ValueError(f"objaverse cache {root}: {paths_file} lists no objects")

        rejects: list[Reject] = []
        if cfg.uids:
            wanted = sorted(set(cfg.uids))
            rejects += [_reject(u, "unknown_uid", f"not in {paths_file}") for u in wanted if u not in object_paths]
            candidates = [u for u in wanted if u in object_paths]
        else:
            candidates = sorted(object_paths)
        # The metadata file of a uid is named after its glbs/<shard>/ folder, as in load_annotations.
        by_shard: dict[str, list[str]] = {}
        for u in candidates:
            by_shard.setdefault(object_paths[u].split("/")[1], []).append(u)
        shards = sorted(by_shard)

        refs: list[AssetRef] = []
        for i in range(0, len(shards), _METADATA_FILES_PER_CALL):
            group = shards[i : i + _METADATA_FILES_PER_CALL]
            uids = [u for s in group for u in by_shard[s]]
            try:
                annotations = objaverse.load_annotations(uids)
            except OSError as e:
                raise FileNotFoundError(
                    f"objaverse cache {root}: metadata/{{{','.join(group)}}}.json.gz missing (download failed) or unreadable: {e}"
                ) from e
            for u in uids:
                ann = annotations.get(u)
                if ann is None:
                    rejects.append(_reject(u, "no_annotation", f"no record in metadata/{object_paths[u].split('/')[1]}.json.gz"))
                    continue
                # The glb archive's counts describe the file that is downloaded; the top-level
                # ones describe the uploaded source (glTF export splits vertices at seams).
                glb = (ann.get("archives") or {}).get("glb") or {}
                try:
                    counts = _counts({
                        "animationCount": ann.get("animationCount"),
                        "faceCount": glb["faceCount"] if glb.get("faceCount") is not None else ann.get("faceCount"),
                        "vertexCount": glb["vertexCount"] if glb.get("vertexCount") is not None else ann.get("vertexCount"),
                    })
                except ValueError as e:
                    rejects.append(_reject(u, "bad_metadata", str(e)))
                    continue
                license = ann.get("license") or "unknown"
                reject = _curate(u, license, counts, cfg)
                if reject:
                    rejects.append(reject)
                    continue
                meta = dict(counts, author=(ann.get("user") or {}).get("username", ""), url=ann.get("viewerUrl", ""))
                refs.append(AssetRef(u, "objaverse", object_paths[u], license, ann.get("name") or "", meta))
                if cfg.limit and len(refs) >= cfg.limit:
                    return refs, rejects
        return refs, rejects


def _fetch_objaverse(ref: AssetRef, cfg: SourceConfig, limits: LimitsConfig) -> tuple[bytes, ExternalReader]:
    with _objaverse_cache(cfg) as root:
        cached = os.path.exists(os.path.join(root, ref.uri))
        try:
            # One uid: a download Pool would buy nothing (and would not inherit the cache folder
            # under a non-fork start method), so bulk parallel downloads are `prefetch`'s job.
            paths = objaverse.load_objects([ref.uid], download_processes=1)
        except OSError as e:  # URLError/HTTPError/timeouts from the download, disk errors
            state = "is cached but could not be read" if cached else "is not in the cache and its download failed"
            raise AssetError("fetch", "fetch_failed", f"objaverse {ref.uid}: {os.path.join(root, ref.uri)} {state}: {e}") from e
    if ref.uid not in paths:
        raise AssetError("fetch", "fetch_failed", f"objaverse {ref.uid}: not in {root}/object-paths.json.gz")
    fs, path = pafs.LocalFileSystem(), paths[ref.uid]
    try:
        data = _read_asset(fs, path, path, limits)
    except OSError as e:
        raise AssetError("fetch", "fetch_failed", f"objaverse {ref.uid}: {path}: {e}") from e
    return data, _external_reader(fs, os.path.dirname(path), path, limits)


# ----------------------------------------------------------------------------------------- local


@dataclass
class _Local:
    uid: str
    uri: str
    sidecar: str | None  # URI/path of the sidecar when it exists


def _list_local(cfg: SourceConfig) -> tuple[list[AssetRef], list[Reject]]:
    if not cfg.path:
        raise ValueError("source.path is empty: give a folder, a list file, or a .glb/.gltf (path or URI)")
    root = cfg.path if _is_uri(cfg.path) else os.path.abspath(os.path.expanduser(cfg.path))
    fss = _Filesystems()
    try:
        fs, root_path = fss.resolve(root)
        info = fs.get_file_info(root_path)
    except ValueError as e:  # ArrowInvalid: not a URI pyarrow understands
        raise ValueError(f"local source {cfg.path!r} is not a path or URI pyarrow can open: {e}") from e
    except OSError as e:  # e.g. an unreachable bucket: not the same thing as a missing one
        raise OSError(f"local source {cfg.path!r} cannot be reached: {e}") from e
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"local source {cfg.path!r} does not exist")
    ext = _ext(root_path)
    if info.type == pafs.FileType.Directory:
        found, rejects = _scan_folder(fs, root_path, root)
    elif ext in ASSET_EXTENSIONS:
        found, rejects = _with_sidecars([(_uid(_name(root)), root)], fss), []
    elif ext in OTHER_3D_EXTENSIONS:
        raise ValueError(f"local source {cfg.path!r} is a {ext} file: only .glb/.gltf are read")
    else:
        found, rejects = _read_list(fs, root_path, root, fss)
    if not found and not rejects:
        raise ValueError(f"local source {cfg.path!r} holds no .glb/.gltf assets")

    by_uid: dict[str, _Local] = {}
    for a in found:
        if a.uid in by_uid:
            raise ValueError(f"two local assets map to uid {a.uid!r}: {by_uid[a.uid].uri} and {a.uri}")
        by_uid[a.uid] = a
    allowed = set(cfg.uids)
    rejects += [_reject(u, "unknown_uid", f"no asset under {cfg.path}") for u in sorted(allowed - by_uid.keys())]

    refs: list[AssetRef] = []
    for uid in sorted(by_uid):
        a = by_uid[uid]
        if allowed and uid not in allowed:
            rejects.append(_reject(uid, "not_in_uid_list", a.uri))
            continue
        record: dict[str, Any] = {}
        if a.sidecar is not None:
            try:
                fs, path = fss.resolve(a.sidecar)
                record = json.loads(_read(fs, path))
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                counts = _counts(record)
            except (OSError, ValueError) as e:  # JSONDecodeError/UnicodeDecodeError are ValueErrors
                rejects.append(_reject(uid, "bad_metadata", f"{a.sidecar}: {e}"))
                continue
        else:
            counts = {}
        license = str(record.get("license") or "unknown")
        reject = _curate(uid, license, counts, cfg)
        if reject:
            rejects.append(reject)
            continue
        name = str(record.get("name") or _strip_ext(_name(a.uri)))
        refs.append(AssetRef(uid, "local", a.uri, license, name, {k: v for k, v in counts.items() if v is not None}))
        if cfg.limit and len(refs) >= cfg.limit:
            break
    return refs, rejects


def _scan_folder(fs: pafs.FileSystem, root_path: str, root: str) -> tuple[list[_Local], list[Reject]]:
    root_path = root_path.rstrip("/")
    files = [
        i.path[len(root_path) + 1 :]
        for i in fs.get_file_info(pafs.FileSelector(root_path, recursive=True))
        if i.type == pafs.FileType.File
    ]
    files = sorted(f for f in files if not any(part.startswith(".") for part in f.split("/")))
    present = set(files)
    found, rejects = [], []
    for rel in files:
        if _ext(rel) in ASSET_EXTENSIONS:
            sidecar = _strip_ext(rel) + SIDECAR_SUFFIX
            found.append(_Local(_uid(rel), _join(root, rel), _join(root, sidecar) if sidecar in present else None))
        elif _ext(rel) in OTHER_3D_EXTENSIONS:
            rejects.append(_reject(_uid(rel), "unsupported_extension", _join(root, rel)))
    return found, rejects


def _read_list(fs: pafs.FileSystem, list_path: str, list_uri: str, fss: _Filesystems) -> tuple[list[_Local], list[Reject]]:
    try:
        text = _read(fs, list_path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"local source {list_uri!r} is neither a folder, a .glb/.gltf nor a UTF-8 text list: {e}") from e
    base = _parent(list_uri)
    entries: list[tuple[str, str]] = []  # (uid, uri)
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        uri = _join(base, entry)
        inside = not _is_uri(entry) and not entry.startswith("/") and not posixpath.normpath(entry).startswith("..")
        entries.append((_uid(posixpath.normpath(entry) if inside else _split_path(uri).lstrip("/")), uri))
    rejects = [_reject(uid, "unsupported_extension", uri) for uid, uri in entries if _ext(uri) not in ASSET_EXTENSIONS]
    assets = [(uid, uri) for uid, uri in entries if _ext(uri) in ASSET_EXTENSIONS]
    exists = _exists(fss, [uri for _, uri in assets])
    rejects += [_reject(uid, "file_not_found", uri) for uid, uri in assets if not exists[uri]]
    return _with_sidecars([a for a in assets if exists[a[1]]], fss), rejects


def _with_sidecars(assets: list[tuple[str, str]], fss: _Filesystems) -> list[_Local]:
    sidecars = {uri: _join(_parent(uri), _strip_ext(_name(uri)) + SIDECAR_SUFFIX) for _, uri in assets}
    exists = _exists(fss, list(sidecars.values()))
    return [_Local(uid, uri, sidecars[uri] if exists[sidecars[uri]] else None) for uid, uri in assets]


def _exists(fss: _Filesystems, uris: list[str]) -> dict[str, bool]:
    """Which of these files exist: one batched get_file_info per filesystem."""
    groups: dict[int, tuple[pafs.FileSystem, list[tuple[str, str]]]] = {}
    for uri in uris:
        fs, path = fss.resolve(uri)
        groups.setdefault(id(fs), (fs, []))[1].append((uri, path))
    out: dict[str, bool] = {}
    for fs, items in groups.values():
        for (uri, _), info in zip(items, fs.get_file_info([p for _, p in items])):
            out[uri] = info.type == pafs.FileType.File
    return out


def _external_reader(fs: pafs.FileSystem, base_dir: str, asset: str, limits: LimitsConfig | None = None) -> ExternalReader:
    """Reader for a .gltf's external files: `read(rel, max_bytes)` gets the URL-decoded relative
    path gltf_io passes and the buffer's declared byteLength (None when unknown), and returns at
    most `max_bytes` bytes of the file (a longer file is fine: its first bytes are the buffer).

    The file must be a regular file inside the asset's folder `base_dir`: on local disk after
    resolving symlinks (os.path.realpath, then opened without following a link, non-blocking so a
    FIFO cannot hang the read), on any other pyarrow filesystem (object stores) under the folder's
    key prefix. Anything else is `AssetError("read", "unsafe_uri")` with a detail built from the
    URI alone, so it never tells whether, or as what, a file outside the folder exists. A file
    above `limits.max_file_mb` is `too_large`. A missing file inside the folder is a
    FileNotFoundError, which the glTF reader reports as `missing_buffer`.
    """
    limits = limits or LimitsConfig()
    cap, mb = _max_bytes(limits), limits.max_file_mb
    local = isinstance(fs, pafs.LocalFileSystem)
    if local:
        root = os.path.realpath(base_dir)
    else:  # object stores: keys, no links; ".." must not reach another prefix or bucket
        folder = posixpath.normpath(base_dir) if base_dir else "."
        prefix = folder.rstrip("/") + "/"

    def refuse(rel: str, why: str = "it must name a regular file inside the asset's folder") -> AssetError:
        return AssetError("read", "unsafe_uri", f"{asset}: external uri {_shown(rel)} refused: {why}")

    def too_large(rel: str, size: int | None) -> AssetError:
        has = f"{size:,} bytes" if size is not None else f"more than {cap:,} bytes"
        return AssetError("read", "too_large", f"{asset}: external file {_shown(rel)} has {has} "
                          f"> limits.max_file_mb={mb:g}")

    def read(rel: str, max_bytes: int | None = None) -> bytes:
        why = _unsafe_syntax(rel)
        if why:
            raise refuse(rel, why)
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
            raise ValueError(f"{asset}: external file {_shown(rel)}: byteLength {max_bytes!r} is not an integer >= 0")
        if local:
            return read_local(rel, max_bytes)
        path = posixpath.normpath(posixpath.join(folder, rel))
        if folder == "." and (path == "." or path.startswith(("../", "/")) or path == ".."):
            raise refuse(rel)
        if folder != "." and not path.startswith(prefix):
            raise refuse(rel)
        info = fs.get_file_info(path)  # inside the asset's prefix from here on: its own files
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{asset}: external file {_shown(rel)} does not exist")
        if info.type != pafs.FileType.File:
            raise refuse(rel)
        return _read_capped(fs, info, max_bytes, cap, lambda size: too_large(rel, size))

    def read_local(rel: str, max_bytes: int | None) -> bytes:
        path = _resolve_inside(root, rel)
        # The spec'd check, again on the result (it only differs if the folder changed meanwhile).
        if path is None or os.path.commonpath([os.path.realpath(path), root]) != root:
            raise refuse(rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise FileNotFoundError(f"{asset}: external file {_shown(rel)} does not exist") from e
        except OSError as e:
            if e.errno == errno.ELOOP:  # the last name turned into a symlink after it was resolved
                raise refuse(rel) from None
            raise OSError(e.errno, f"{asset}: external file {_shown(rel)} cannot be opened: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a FIFO, device, socket or directory
                raise refuse(rel)
            if cap is not None and st.st_size > cap:
                raise too_large(rel, st.st_size)
            return _read_chunks(lambda n: os.read(fd, n), _bounded(st.st_size, max_bytes, cap))
        finally:
            os.close(fd)

    return read


def _resolve_inside(root: str, rel: str) -> str | None:
    """`rel` resolved against the folder `root` (a realpath) like os.path.realpath does, one
    component and one symlink at a time; None as soon as a step leaves the folder.

    Only names inside the folder are looked at (lstat/readlink): a step out of it (past an
    ancestor of the folder, or a link pointing elsewhere) ends the walk before the name it
    reaches is touched, so the answer never depends on what exists outside the folder. The
    folder's own ancestors (reached by ".." or by an absolute link) may be passed through.
    """
    base = [p for p in root.split("/") if p]
    cur = list(base)
    todo = [p for p in rel.split("/") if p not in ("", ".")]
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if cur:
                cur.pop()
            continue
        cur.append(name)
        if len(cur) <= len(base):
            if cur != base[: len(cur)]:
                return None  # outside the folder: not looked at
            continue  # the folder or one of its ancestors: real directories (root is a realpath)
        path = "/" + "/".join(cur)
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:  # missing (inside the folder): open() reports it
            continue
        if is_link:
            links += 1
            if links > 40:  # ELOOP's bound
                return None
            target = os.readlink(path)
            cur.pop()
            if target.startswith("/"):
                cur = []
            todo[:0] = [p for p in target.split("/") if p not in ("", ".")]
    return "/" + "/".join(cur) if len(cur) > len(base) else None


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_CHUNK = 8 << 20


def _unsafe_syntax(rel: str) -> str:
    """Why an external URI is refused on its text alone ("" when it is a plain relative path)."""
    if not isinstance(rel, str) or not rel:
        return "it is empty"
    if "\0" in rel:
        return "it contains a NUL byte"
    if "\\" in rel:
        return "it contains a backslash"
    if rel.startswith("/"):
        return "it is an absolute path"
    if _SCHEME.match(rel):
        return "it is a URI with a scheme, not a path relative to the asset"
    return ""


def _shown(rel: Any) -> str:
    """The URI as the asset wrote it (after URL-decoding), shortened: a detail, not a dump."""
    text = repr(rel)
    return text if len(text) <= 200 else text[:160] + f"...' ({len(rel):,} characters)"


def _max_bytes(limits: LimitsConfig) -> int | None:
    """limits.max_file_mb in bytes (None: no limit)."""
    return int(limits.max_file_mb * (1 << 20)) if limits.max_file_mb and limits.max_file_mb > 0 else None


def _bounded(size: int | None, max_bytes: int | None, cap: int | None) -> int:
    """How many bytes to read: the file's size, at most `max_bytes`; an unknown size reads up to
    one byte past the cap (so an over-large file is detected without reading it all)."""
    bounds = [b for b in (size, max_bytes, None if cap is None else cap + 1) if b is not None]
    if not bounds:
        raise OSError("the file's size is unknown and limits.max_file_mb=0 sets no bound")
    return min(bounds)


def _read_chunks(read: Callable[[int], bytes], n: int) -> bytes:
    """At most `n` bytes from `read`, in chunks of at most 8 MiB (stops early at end of file)."""
    parts, left = [], n
    while left > 0:
        chunk = read(min(left, _CHUNK))
        if not chunk:
            break
        parts.append(bytes(chunk))
        left -= len(chunk)
    return b"".join(parts)


def _read_capped(fs: pafs.FileSystem, info: pafs.FileInfo, max_bytes: int | None, cap: int | None,
                 too_large: Callable[[int | None], AssetError]) -> bytes:
    """The first min(size, max_bytes) bytes of the regular file `info`, in bounded chunks; raises
    too_large(size) above `cap` bytes before reading, too_large(None) when more than `cap` bytes
    arrive (a size the filesystem did not know, or a file that grew)."""
    if cap is not None and info.size is not None and info.size > cap:
        raise too_large(info.size)
    with fs.open_input_stream(info.path, compression=None) as f:
        data = _read_chunks(f.read, _bounded(info.size, max_bytes, cap))
    if cap is not None and len(data) > cap:
        raise too_large(None)
    return data


def _read_asset(fs: pafs.FileSystem, path: str, shown: str, limits: LimitsConfig) -> bytes:
    """The whole asset file, refused (fetch/too_large) above limits.max_file_mb before reading it."""
    cap = _max_bytes(limits)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path} does not exist")
    if info.type != pafs.FileType.File:
        raise IsADirectoryError(f"{path} is not a regular file") if info.type == pafs.FileType.Directory \
            else OSError(f"{path} is not a regular file")

    def too_large(size: int | None) -> AssetError:
        has = f"{size:,} bytes" if size is not None else f"more than {cap:,} bytes"
        return AssetError("fetch", "too_large", f"{shown}: {has} > limits.max_file_mb={limits.max_file_mb:g}")

    return _read_capped(fs, info, None, cap, too_large)


# ------------------------------------------------------------------------------------ procedural

_PROCEDURAL_SCHEME = "procedural://"


def _list_procedural(cfg: SourceConfig) -> tuple[list[AssetRef], list[Reject]]:
    families = list(cfg.families) or list(procedural.FAMILIES)
    unknown = sorted(set(families) - set(procedural.FAMILIES))
    if unknown:
        raise ValueError(f"source.families: unknown procedural families {unknown}; choose from {list(procedural.FAMILIES)}")
    if len(set(families)) != len(families):
        raise ValueError(f"source.families lists a family twice: {families}")
    if cfg.count <= 0:
        raise ValueError(f"source.count must be > 0 for source.kind=procedural, got {cfg.count}")
    if cfg.seed < 0:
        raise ValueError(f"source.seed must be >= 0, got {cfg.seed}")
    uids = [procedural.asset_uid(procedural.family_of(i, families), cfg.seed, i) for i in range(cfg.count)]
    allowed = set(cfg.uids)
    rejects = [_reject(u, "unknown_uid", f"not among the {cfg.count} procedural assets of seed {cfg.seed} "
                       f"and families {families}") for u in sorted(allowed - set(uids))]
    refs: list[AssetRef] = []
    for i, uid in enumerate(uids):
        if allowed and uid not in allowed:
            rejects.append(_reject(uid, "not_in_uid_list", f"{_PROCEDURAL_SCHEME}{procedural.family_of(i, families)}/{cfg.seed}/{i}"))
            continue
        spec = procedural.asset_spec(procedural.family_of(i, families), cfg.seed, i)
        counts = {"animationCount": 1, "faceCount": spec.num_faces, "vertexCount": spec.num_vertices}
        reject = _curate(uid, procedural.PROCEDURAL_LICENSE, counts, cfg)
        if reject:
            rejects.append(reject)
            continue
        meta = dict(counts, family=spec.family, seed=spec.seed, index=spec.index, duration=spec.duration)
        refs.append(AssetRef(uid, "procedural", f"{_PROCEDURAL_SCHEME}{spec.family}/{spec.seed}/{spec.index}",
                             procedural.PROCEDURAL_LICENSE, f"procedural {spec.family} #{spec.index}", meta))
        if cfg.limit and len(refs) >= cfg.limit:
            break
    return refs, rejects


def _fetch_procedural(ref: AssetRef) -> tuple[bytes, ExternalReader]:
    try:
        family, seed, index = ref.uri.removeprefix(_PROCEDURAL_SCHEME).split("/")
        if not ref.uri.startswith(_PROCEDURAL_SCHEME) or procedural.asset_uid(family, int(seed), int(index)) != ref.uid:
            raise ValueError("uri and uid disagree")
        data = procedural.build_asset(family, int(seed), int(index)).glb
    except ValueError as e:
        raise AssetError("fetch", "fetch_failed", f"procedural {ref.uid} ({ref.uri}): {e}") from e

    def read(rel: str, max_bytes: int | None = None) -> bytes:
        raise FileNotFoundError(f"{ref.uri}: a procedural asset has no external files (asked for {rel!r})")

    return data, read


# ------------------------------------------------------------------------------- paths and URIs


class _Filesystems:
    """(filesystem, path) of a local path or URI, creating one filesystem per scheme/authority:
    creating an S3/GCS filesystem can cost a request, and a list may name thousands of files."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], tuple[pafs.FileSystem, str]] = {}
        self._local = pafs.LocalFileSystem()

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        if not _is_uri(uri):
            return self._local, uri
        s = urllib.parse.urlsplit(uri)
        key, upath = (s.scheme, s.netloc, s.query), urllib.parse.unquote(s.path).rstrip("/")
        if key not in self._by_key:
            fs, path = pafs.FileSystem.from_uri(uri)
            path = path.rstrip("/")
            if not path.endswith(upath):  # a scheme whose paths do not end with the URI path: no reuse
                return fs, path
            # e.g. s3://bucket/a/b -> "bucket/a/b": the prefix ("bucket") is kept for this authority
            self._by_key[key] = (fs, path[: len(path) - len(upath)])
        fs, prefix = self._by_key[key]
        return fs, prefix + upath


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    # compression=None: pyarrow would otherwise decompress a file whose name ends in .gz/.bz2/...
    with fs.open_input_stream(path, compression=None) as f:
        return f.read()


def _is_uri(s: str) -> bool:
    return "://" in s


def _split_path(uri: str) -> str:
    """The path part of a URI (with its authority, e.g. bucket/key for s3) or the local path."""
    if not _is_uri(uri):
        return uri
    s = urllib.parse.urlsplit(uri)
    return s.netloc + urllib.parse.unquote(s.path)


def _join(base: str, rel: str) -> str:
    """`rel` resolved against the folder `base` (both a local path or URI); a URI or an absolute
    path in `rel` stands on its own."""
    if _is_uri(rel):
        return rel
    if not _is_uri(base) or rel.startswith("/"):
        return os.path.normpath(os.path.join(base, rel))
    s = urllib.parse.urlsplit(base)
    path = posixpath.normpath(posixpath.join("/" + urllib.parse.unquote(s.path).lstrip("/"), rel))
    return urllib.parse.urlunsplit((s.scheme, s.netloc, urllib.parse.quote(path), s.query, ""))


def _parent(uri: str) -> str:
    return _join(uri, "..")


def _name(uri: str) -> str:
    return posixpath.basename(_split_path(uri))


def _ext(path: str) -> str:
    return posixpath.splitext(_split_path(path))[1].lower()


def _strip_ext(path: str) -> str:
    return path[: len(path) - len(_ext(path))] if _ext(path) else path


def _uid(rel: str) -> str:
    return _strip_ext(rel).replace("/", "__")
