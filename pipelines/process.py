"""One asset in, its clip rows and reject records out: the function the Ray Data job maps.

Pure and deterministic: every random draw comes from a generator seeded by the clip's
`sample_id`, so re-running an asset (after a crash, on another node) gives identical arrays.
A bad asset or clip raises AssetError inside a stage and becomes a reject record; anything
else is recorded as `internal_error` with its traceback, so one broken asset can neither kill
the job nor disappear.
"""
from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from pipelines import bake, gltf_io, materials, normalize, quality, queries, render, sdf, sharp, sources, surface, watertight
from pipelines.config import ClipConfig, DatasetConfig, SplitConfig
from pipelines.errors import AssetError
from pipelines.records import AssetResult, Reject
from pipelines.schema import SCHEMA_VERSION, Dims

STAGES = ("fetch", "read", "bake", "normalize", "queries", "motion", "sharp", "watertight", "surface", "sdf", "quality",
          "render")


def dims(cfg: DatasetConfig) -> Dims:
    return Dims(
        T=cfg.num_frames,
        N=cfg.num_surface_points,
        Ns=cfg.num_sharp_points,
        Q=cfg.num_queries,
        Qs=cfg.num_sharp_queries,
        Nv=cfg.sdf.num_volume,
        Nn=cfg.sdf.num_near,
    )


def derive_seed(seed: int, sample_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()[:8], "little")


def split_of(uid: str, cfg: SplitConfig) -> str:
    u = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "little") / 2**64
    return "test" if u < cfg.test else "val" if u < cfg.test + cfg.val else "train"


class _Timer:
    def __init__(self, into: dict[str, float]):
        self.into = into

    @contextmanager
    def __call__(self, stage: str):
        # CPU time of this process: what a cluster pays for, independent of how busy the node is.
        t0 = time.process_time()
        try:
            yield
        finally:
            self.into[stage] += time.process_time() - t0


@dataclass
class ClipPlan:
    animation_index: int
    animation_name: str
    clip_index: int
    times: np.ndarray

    def sample_id(self, uid: str) -> str:
        return f"{uid}:a{self.animation_index}:c{self.clip_index}"


def plan_clips(animations: list, num_frames: int, cfg: ClipConfig) -> list[ClipPlan]:
    if cfg.animations == "first":
        chosen = animations[:1]
    elif cfg.animations == "all":
        chosen = animations
    elif 0 <= cfg.animations < len(animations):
        chosen = [animations[cfg.animations]]
    else:
        raise AssetError("bake", "animation_index_out_of_range", f"animation {cfg.animations} of {len(animations)}")
    plans = []
    for anim in chosen:
        duration = anim.end - anim.start
        if cfg.window <= 0 or cfg.window >= duration:
            windows = [None]
        else:
            stride = cfg.stride if cfg.stride > 0 else cfg.window
            starts = np.arange(anim.start, anim.end - cfg.window + 1e-9, stride)
            windows = [(float(s), float(s) + cfg.window) for s in starts]
        if cfg.max_per_animation > 0:
            windows = windows[: cfg.max_per_animation]
        for k, w in enumerate(windows):
            plans.append(ClipPlan(anim.index, anim.name, k, bake.frame_times(anim, num_frames, w)))
    return plans


def process_asset(ref: sources.AssetRef, cfg: DatasetConfig, config_digest: str) -> AssetResult:
    """All clips of one asset. Never raises: failures become reject records."""
    result = AssetResult(uid=ref.uid)
    timer = _Timer(result.cpu_s)
    stage = "fetch"
    try:
        with timer("fetch"):
            data, read_external = sources.fetch(ref, cfg.source, cfg.limits)
            sha = hashlib.sha256(data).hexdigest()
        stage = "read"
        with timer("read"):
            gltf = gltf_io.load_gltf(data, read_external, cfg.limits)
        stage = "bake"
        with timer("bake"):
            animations = bake.list_animations(gltf)
            if not animations:
                raise AssetError("bake", "no_animation", "the file has no animations")
            plans = plan_clips(animations, cfg.num_frames, cfg.clips)
    except AssetError as e:
        result.rejects.append(Reject(ref.uid, "", e.stage, e.reason, e.detail))
        return result
    except Exception:
        result.rejects.append(Reject(ref.uid, "", stage, "internal_error", traceback.format_exc()))
        return result

    for plan in plans:
        sample_id = plan.sample_id(ref.uid)
        try:
            row = process_clip(gltf, plan, sample_id, cfg, timer)
        except AssetError as e:
            result.rejects.append(Reject(ref.uid, sample_id, e.stage, e.reason, e.detail))
            continue
        except Exception:
            result.rejects.append(Reject(ref.uid, sample_id, "clip", "internal_error", traceback.format_exc()))
            continue
        row.update(
            uid=ref.uid,
            source=ref.source,
            source_sha256=sha,
            license=ref.license,
            split=split_of(ref.uid, cfg.split),
            config_digest=config_digest,
        )
        result.rows.append(row)
    return result


def watertight_frames(baked: bake.Baked, center: np.ndarray, scale: float,
                      cfg: watertight.WatertightConfig) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """The clip's watertight meshes, one per frame, made lazily (each next() makes one): the baked
    frames normalised by (center, scale), then watertight.make_watertight with `cfg`; yields
    (vertices float64 [V,3], faces int64 [F,3], info) in the clip's normalised [-1,1]^3 frame.

    The ground truth of a clip: the build's watertight stage (process_clip) calls it with the
    transform it computed, the evaluation (pipelines.ground_truth) with the row's stored
    `normalization`, so the evaluation rebuilds the very meshes the row's samples came from."""
    verts_TV3 = normalize.apply(baked.vertices, center, scale)
    for t in range(len(verts_TV3)):
        yield watertight.make_watertight(verts_TV3[t], baked.faces, cfg)


def process_clip(gltf, plan: ClipPlan, sample_id: str, cfg: DatasetConfig, timer: _Timer) -> dict:
    rng = np.random.default_rng(derive_seed(cfg.seed, sample_id))
    T = cfg.num_frames

    with timer("bake"):
        baked = bake.bake(gltf, plan.animation_index, plan.times, cfg.bake)
        faces = baked.faces
    with timer("render"):  # textures are read and checked before any costly stage
        look = None
        if cfg.render.textures:
            mats = materials.load(gltf, np.unique(baked.face_material), cfg.limits.max_texture_pixels,
                                  cfg.render.max_texture_size)
            look = render.Appearance(baked.texcoords, baked.face_material, mats)
    with timer("normalize"):
        center, scale = normalize.clip_transform(baked.vertices, cfg.normalize)
        verts_TV3 = normalize.apply(baked.vertices, center, scale)

    with timer("motion"):
        # Area-uniform points carried through the animation measure how much the shape moves.
        probe = surface.sample_barycentric(verts_TV3[0], faces, 4096, rng)
        probe_TP3 = queries.propagate(verts_TV3, faces, *probe)[..., :3]  # also the quality gate's source points
        motion_mean, motion_max = normalize.motion(probe_TP3)
        if motion_max < cfg.motion.min_motion:
            raise AssetError(
                "motion", "static", f"max mean displacement {motion_max:.2e} < min_motion {cfg.motion.min_motion:g}"
            )
    with timer("quality"):
        source_area = quality.source_areas(verts_TV3, faces)
        quality.check_source(source_area, cfg.quality)  # before any costly stage

    with timer("queries"):
        if cfg.queries.mode == "aligned":
            q_face, q_bary = queries.pick(verts_TV3[0], faces, cfg.num_queries, cfg.queries, rng)
            q_TQ6 = queries.propagate(verts_TV3, faces, q_face, q_bary)
        else:
            q_TQ6 = queries.independent(verts_TV3, faces, cfg.num_queries, cfg.queries, rng)
            q_face = np.full(cfg.num_queries, -1, dtype=np.int64)  # no single source point per query
            q_bary = np.zeros((cfg.num_queries, 3))

    row: dict = {}
    with timer("sharp"):
        num_sharp_edges = 0
        if cfg.num_sharp_points or cfg.num_sharp_queries:
            n_candidates = max(cfg.num_sharp_points, cfg.queries.num_candidates if cfg.num_sharp_queries else 0)
            s_face, s_bary, num_sharp_edges = sharp.sample(verts_TV3[0], faces, n_candidates, cfg.sharp, rng)
            if cfg.num_sharp_points:
                row["sharp_surface"] = queries.propagate(
                    verts_TV3, faces, s_face[: cfg.num_sharp_points], s_bary[: cfg.num_sharp_points]
                )
            if cfg.num_sharp_queries:
                xyz0 = surface.positions(verts_TV3[0], faces, s_face, s_bary)
                keep = queries.fps(xyz0, cfg.num_sharp_queries, cfg.queries.fps_tree_height)
                row["sharp_queries"] = queries.propagate(verts_TV3, faces, s_face[keep], s_bary[keep])
                row["sharp_query_face"] = s_face[keep]
                row["sharp_query_bary"] = s_bary[keep]

    surface_TN6 = np.empty((T, cfg.num_surface_points, 6), np.float32)
    vol_TN4 = np.empty((T, cfg.sdf.num_volume, 4), np.float32)
    near_TN4 = np.empty((T, cfg.sdf.num_near, 4), np.float32)
    wt_ok, wt_faces = [], []
    figures: dict[str, list] = {k: [] for k in ("coverage", "extent_ratio", "components", "components_dropped",
                                                "watertight_area", "watertight_volume")}
    h = 2.0 / cfg.watertight.resolution
    meshes = watertight_frames(baked, center, scale, cfg.watertight)
    for t in range(T):
        with timer("watertight"):
            wv, wf, info = next(meshes)
            wt_ok.append(bool(info["watertight"]))
            wt_faces.append(len(wf))
        with timer("surface"):
            surface_TN6[t] = surface.sample_surface(wv, wf, cfg.num_surface_points, rng)
        with timer("sdf"):
            scene = sdf.raycasting_scene(wv, wf)  # one BVH per frame, shared with the projection
            vol_TN4[t], near_TN4[t] = sdf.sample_sdf(wv, wf, cfg.sdf, rng, scene=scene)
        if cfg.queries.project_to_watertight:
            with timer("queries"):
                q_TQ6[t] = queries.project(q_TQ6[t], scene)
        with timer("quality"):
            figures["coverage"].append(quality.coverage(sdf.signed_distance(scene, probe_TP3[t]), h, cfg.quality))
            figures["extent_ratio"].append(quality.extent_ratio(wv, probe_TP3[t]))
            figures["components"].append(info["num_components"])
            figures["components_dropped"].append(info["num_components_raw"] - info["num_components"])
            figures["watertight_area"].append(info["area"])
            figures["watertight_volume"].append(info["volume"])
    with timer("quality"):
        quality.check_watertight(figures["coverage"], figures["extent_ratio"], cfg.quality)

    with timer("render"):
        video = render.render_clip(verts_TV3, faces, baked.colors, cfg.render, rng, look)

    row.update(
        sample_id=sample_id,
        animation_index=plan.animation_index,
        animation_name=plan.animation_name,
        clip_index=plan.clip_index,
        frame_times=plan.times,
        normalization={"center": center.tolist(), "scale": float(scale)},
        surface=surface_TN6,
        queries=q_TQ6,
        query_face=q_face,
        query_bary=q_bary,
        sdf_volume=vol_TN4,
        sdf_near=near_TN4,
        video=video.png,
        camera={
            "intrinsics": video.intrinsics,
            "extrinsics": video.extrinsics,
            "azimuth_deg": video.azimuth_deg,
            "elevation_deg": video.elevation_deg,
            "distance": video.distance,
            "resolution": cfg.render.resolution,
        },
        stats={
            "motion_mean": motion_mean,
            "motion_max": motion_max,
            "source_vertices": int(baked.vertices.shape[1]),
            "source_faces": int(len(faces)),
            "watertight": wt_ok,
            "watertight_faces": wt_faces,
            "sharp_edges": int(num_sharp_edges),
            "source_area": source_area,
            **figures,
        },
        schema_version=SCHEMA_VERSION,
    )
    return row
