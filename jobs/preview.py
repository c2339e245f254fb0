"""Preview an existing dataset: `python -m jobs.preview dataset=<folder or URI> [preview.key=value ...]`.

Writes <dataset>/preview/: one contact sheet per shard (conditioning frames over time, and the
aligned queries drawn on frames 1, T/2 and T, coloured by query index) and report.html (funnel,
reject reasons with counts and examples, quality-figure histograms, timings and memory). The
dataset job writes the same at the end of every build (preview.enabled). Exit status: 0 done,
1 no dataset there, 2 bad key.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from jobs import config as config_lib
from pipelines import preview, shards

log = logging.getLogger("shapegen4d.preview")


@dataclass
class PreviewJobConfig:
    dataset: str = "out/dataset"  # a build_dataset output: local folder or pyarrow URI
    preview: preview.PreviewConfig = field(default_factory=preview.PreviewConfig)


def main(cfg: PreviewJobConfig) -> list[str]:
    out = shards.Output(cfg.dataset)
    if not out.exists("manifest.json"):
        raise FileNotFoundError(f"{out.uri} has no manifest.json: not a finished dataset (run jobs.build_dataset)")
    files = preview.write(out, cfg.preview)
    for rel in files:
        print(f"{out.uri}/{rel}")
    return files


if __name__ == "__main__":
    config_lib.run_job(main, PreviewJobConfig, __doc__)
