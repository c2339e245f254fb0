"""The ground truth of a dataset row, rebuilt from its source asset (for the evaluation).

The shards store samples of each frame's watertight mesh, not the mesh; metrics need the mesh.
It is rebuilt bit-exactly by the very stage functions and config that built the row.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from pipelines.config import DatasetConfig


class GroundTruth:
    """Rebuilds the watertight ground-truth meshes of a clip from its source asset.

    Composes the dataset job's own pure stage functions (sources -> gltf_io -> bake ->
    process.watertight_frames with the row's stored transform, the build's normalise + watertight
    stage) with the config the dataset was built with. Raises AssetError (stage, reason, detail)
    when the asset is unavailable, changed, or a stage rejects it. A clip is any object with the
    row's `source`, `uid`, `source_sha256`, `animation_index`, `clip_index`, `frame_times` and its
    `normalization` as `center`, `scale` (jobs.evaluate.Clip)."""

    def __init__(self, cfg: DatasetConfig):
        self.cfg = cfg
        self._refs: dict | None = None
        self._listing: dict = {}

    def prepare(self, uids: list[str]) -> None:
        """List the assets of these uids once (a metadata pass, as the build's curate stage)."""
        from pipelines import sources

        wanted = sorted(set(uids) - set(self._refs or {}))
        self._refs = self._refs or {}
        if not wanted:
            return
        try:
            refs, rejects = sources.list_assets(dataclasses.replace(self.cfg.source, uids=wanted, limit=0))
        except (OSError, ValueError) as e:  # the whole source is gone or unreadable
            for u in wanted:
                self._listing[u] = ("source_unavailable", f"{self.cfg.source.kind} source {self.cfg.source.path!r}: {e}")
            return
        self._refs.update({r.uid: r for r in refs if r.uid in wanted})
        reasons = {r.uid: (r.reason, r.detail) for r in rejects}
        for u in wanted:
            if u not in self._refs:
                self._listing[u] = reasons.get(u, ("source_unavailable", "not listed by the source"))

    def ref(self, uid: str):
        """The AssetRef of a uid (listed on first use); AssetError when the source has no such asset."""
        from pipelines.errors import AssetError

        if uid not in (self._refs or {}) and uid not in self._listing:
            self.prepare([uid])
        if uid in self._refs:
            return self._refs[uid]
        reason, detail = self._listing[uid]
        raise AssetError("fetch", "source_unavailable", f"asset {uid}: {reason}: {detail}")

    def frames(self, clip) -> list[tuple[np.ndarray, np.ndarray]]:
        """T watertight meshes (vertices float64 [V,3], faces int64 [F,3]) in the clip's normalised frame."""
        from pipelines import bake, gltf_io, process, sources
        from pipelines.errors import AssetError

        if clip.source != self.cfg.source.kind:
            raise AssetError("fetch", "source_unavailable",
                             f"row was built from a {clip.source} source, the dataset config names {self.cfg.source.kind}")
        ref = self.ref(clip.uid)
        data, read_external = sources.fetch(ref, self.cfg.source, self.cfg.limits)
        sha = hashlib.sha256(data).hexdigest()
        if sha != clip.source_sha256:
            raise AssetError("fetch", "source_changed", f"{ref.uri} has sha256 {sha}, the dataset was built from {clip.source_sha256}")
        gltf = gltf_io.load_gltf(data, read_external, self.cfg.limits)
        times = self.times(gltf, clip)
        baked = bake.bake(gltf, clip.animation_index, times, self.cfg.bake)
        return [(v, f) for v, f, _ in process.watertight_frames(baked, clip.center, clip.scale, self.cfg.watertight)]

    def times(self, gltf, clip) -> np.ndarray:
        """The float64 frame times the build planned for this clip when they round to the stored
        float32 ones (bit-exact rebuild); otherwise the stored times."""
        from pipelines import bake, process
        from pipelines.errors import AssetError

        stored = clip.frame_times.astype(np.float64)
        try:
            plans = process.plan_clips(bake.list_animations(gltf), self.cfg.num_frames, self.cfg.clips)
        except AssetError:
            return stored
        for p in plans:
            if (p.animation_index, p.clip_index) == (clip.animation_index, clip.clip_index) and \
                    p.times.shape == clip.frame_times.shape and np.array_equal(p.times.astype(np.float32), clip.frame_times):
                return p.times
        return stored
