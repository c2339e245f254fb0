"""What every job shares at run time: starting Ray, the code version it records, durations."""
from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class RayConfig:
    """The `ray` section of every job that runs on Ray."""

    address: str = ""  # "" = start a local Ray instance; "auto" joins the cluster of `ray job submit`, or ray://host:port
    num_cpus: int = 0  # local instance only; 0 = all cores


def init_ray(cfg: RayConfig) -> None:
    """Join the cluster at `cfg.address`, or start a local Ray instance of `cfg.num_cpus`."""
    import ray

    if ray.is_initialized():
        return
    if cfg.address:
        # On a cluster the code travels with `ray job submit --working-dir .` (see infra/).
        ray.init(address=cfg.address)
        return
    # Local workers must import this checkout even when it is not pip-installed.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    ray.init(num_cpus=cfg.num_cpus or None, runtime_env={"env_vars": {"PYTHONPATH": path}}, include_dashboard=False)


def code_version() -> dict:
    """Git revision of the code that runs (and whether it has local changes)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                                    text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        sha, dirty = os.environ.get("SHAPEGEN4D_CODE_VERSION", "unknown"), False
    return {"git": sha, "dirty": dirty}


def hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def lr_factor(step: int, warmup_steps: int, steps: int, decay_to: float) -> float:
    """Learning-rate multiplier after `step` optimizer steps: a linear warm-up over `warmup_steps`
    times a cosine from 1 at step 0 to `decay_to` at `steps` (decay_to = 1: constant after warm-up)."""
    ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return ramp * (decay_to + (1.0 - decay_to) * 0.5 * (1.0 + math.cos(math.pi * min(step / max(steps, 1), 1.0))))
