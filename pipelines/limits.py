"""Resource limits for one untrusted asset: what it may read, declare, allocate and spend.

A glTF file states its own sizes (accessor counts, morph targets, nodes, joints, keyframes) and
can name other files. Nothing it says is trusted: every declared count is checked against the
bytes that back it and against these limits BEFORE anything of that size is allocated, and the
asset process itself runs under a wall-clock and memory limit (`pipelines.isolate`). Exceeding
a count limit is a reject with reason ``too_large`` whose detail names the `limits.<key>`.

Defaults fit the default reservation of 3 GiB per asset (`limits.memory_per_asset_gb`): the
largest arrays the bake holds are T x vertices x 3 float64 per frame set (16 x 1M x 24 B =
384 MB) plus the morph deltas (targets x vertices x 24 B, 16M -> 384 MB).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.errors import AssetError


@dataclass
class LimitsConfig:
    # Reads: any one file (the asset, each external buffer) is refused above this size.
    max_file_mb: float = 512.0
    # Declared sizes, checked from the JSON before decoding (0 = no limit).
    max_accessor_elements: int = 4_000_000  # elements of one accessor (with or without a bufferView)
    max_vertices: int = 1_000_000  # POSITION elements over every primitive of the scene
    max_morph_values: int = 16_000_000  # morph targets x vertices, summed over primitives
    max_nodes: int = 100_000
    max_joints: int = 65_536  # joints summed over every skin
    max_keyframes: int = 4_000_000  # keyframes summed over every sampler of the animation
    max_texture_pixels: int = 8192 * 8192  # width x height of one texture image, from its header
    # What Ray reserves for each asset task: a node runs min(CPUs / cpus_per_asset, memory /
    # memory_per_asset_gb) at once, so it never runs out of memory.
    cpus_per_asset: float = 1.0
    memory_per_asset_gb: float = 3.0
    # The asset process: wall-clock seconds and resident memory (0 = memory_per_asset_gb).
    # A 327,680-face skinned asset takes 22.5 CPU-s (20 s wall) per clip at the paper's sizes on one
    # core here (README "Limits"): 600 s is ~25x that, room for slow CPUs and multi-clip assets.
    timeout_s: float = 600.0
    memory_gb: float = 0.0
    # Times Ray re-runs an asset whose worker process (not the asset process) died, e.g. with its node.
    retries: int = 2


def check(stage: str, what: str, value: int, key: str, limit: int | float) -> None:
    """Raise `too_large` when `value` exceeds `limits.<key>` (a limit of 0 means none)."""
    if limit and value > limit:
        raise AssetError(stage, "too_large", f"{what}: {value:,} > limits.{key}={limit:,}")
