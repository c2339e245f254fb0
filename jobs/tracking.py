"""MLflow plumbing shared by the jobs: where the store is, experiments with a stable artifact
location, and params that fit MLflow's limits."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class MlflowConfig:
    """The `mlflow` section of every job: which store, and the experiment its runs go to."""

    tracking_uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db
    experiment: str = ""  # where this job's runs go (each job has its own default)


def tracking_uri(cfg: MlflowConfig) -> str:
    """The section's URI, else $MLFLOW_TRACKING_URI, else the embedded default: SQLite under ./mlruns."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path("mlruns").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def experiment(name: str, uri: str) -> str:
    """Get or create an experiment, created here on the driver with an absolute artifact location.

    A local store's default artifact location is relative to whichever process creates the
    experiment; a Ray worker would put it in Ray's temporary session folder.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        location = (Path("mlruns").resolve() / "artifacts" / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def log_params(params: dict) -> None:
    """Flattened params in batches of 100, values cut to MLflow's 6000-character limit."""
    import mlflow

    items = [(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))
