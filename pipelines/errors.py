"""The one exception type a stage raises for a bad asset.

Stages are pure functions on one asset. When the asset itself is at fault (corrupt file,
no animation, NaN vertices, ...) they raise ``AssetError``; the job turns it into a reject
row (uid, stage, reason, detail). Any other exception is a bug or an environment problem and
is recorded with reason ``internal_error`` and its traceback, never swallowed silently.
"""
from __future__ import annotations


class AssetError(Exception):
    """A reason to reject one asset (or one clip of it).

    stage:  which stage found the problem ("read", "bake", "normalize", "watertight", ...).
    reason: a short, stable snake_case code used for counting in the funnel
            (e.g. "corrupt_file", "no_animation", "non_finite_vertices").
    detail: a human-readable sentence with the specifics.
    """

    def __init__(self, stage: str, reason: str, detail: str = ""):
        super().__init__(f"[{stage}/{reason}] {detail}")
        self.stage = stage
        self.reason = reason
        self.detail = detail
