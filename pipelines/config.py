"""The dataset's config: one dataclass tree of what the rows contain and where they go.

Each stage owns its own section (defined next to the stage); this file only composes them and
holds the dataset-level knobs. The job (`jobs.build_dataset`) adds the shared `ray` and `mlflow`
sections. Defaults are the paper's setup (16 frames, 32,768 surface points,
1,024 queries, 256^3 watertight grid, 518 px conditioning frames).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipelines.bake import BakeConfig
from pipelines.limits import LimitsConfig
from pipelines.normalize import MotionConfig, NormalizeConfig
from pipelines.preview import PreviewConfig
from pipelines.quality import QualityConfig
from pipelines.queries import QueryConfig
from pipelines.render import RenderConfig
from pipelines.sdf import SdfConfig
from pipelines.sharp import SharpConfig
from pipelines.sources import SourceConfig
from pipelines.watertight import WatertightConfig


@dataclass
class ClipConfig:
    # Which of an asset's animations become clips: "first", "all", or one index (an asset
    # without that animation is rejected with bake/animation_index_out_of_range).
    animations: Literal["first", "all"] | int = "first"
    window: float = 0.0  # seconds per clip; 0 = the whole animation is one clip
    stride: float = 0.0  # seconds between window starts; 0 = same as window (no overlap)
    max_per_animation: int = 1  # cap on windows taken from one animation (0 = no cap)


@dataclass
class SplitConfig:
    # Fractions of assets (by a hash of the uid, so every clip of an asset lands in one split).
    val: float = 0.02
    test: float = 0.02


@dataclass
class OutputConfig:
    path: str = "out/dataset"  # local folder or a pyarrow filesystem URI (s3://bucket/prefix, ...)
    name: str = "shapegen4d"
    rows_per_shard: int = 16
    overwrite: bool = False  # allow reusing an output folder built with a different config
    # On resume, run again the assets earlier runs recorded as worker failures (worker/timeout,
    # out_of_memory, worker_died), e.g. after raising limits.timeout_s or limits.memory_gb.
    retry_failed: bool = False
    log_to_mlflow: bool = True  # record the build as an MLflow run (params, manifest, dataset input)
    progress_bars: bool = False  # Ray Data's own bars; the job logs one line per asset regardless


@dataclass
class DatasetConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    num_frames: int = 16
    num_surface_points: int = 32768
    num_sharp_points: int = 8192  # sharp-edge surface points per frame (0 = column left out)
    num_queries: int = 1024
    num_sharp_queries: int = 0  # Step1X-3D's second query set (0 = off, the paper's 1024-latent setting)
    seed: int = 0
    clips: ClipConfig = field(default_factory=ClipConfig)
    bake: BakeConfig = field(default_factory=BakeConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    queries: QueryConfig = field(default_factory=QueryConfig)
    sharp: SharpConfig = field(default_factory=SharpConfig)
    watertight: WatertightConfig = field(default_factory=WatertightConfig)
    sdf: SdfConfig = field(default_factory=SdfConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)  # <output>/preview/: contact sheets, report.html


# Sections and keys that change how or where the job runs, never what a row contains: left out of
# the config digest so moving a dataset job to a cluster, or giving slow assets more time
# (then output.retry_failed=true), keeps its digest and its resume point.
RUNTIME_KEYS = ("output", "preview", "limits.cpus_per_asset", "limits.memory_per_asset_gb", "limits.timeout_s",
                "limits.memory_gb", "limits.retries")
