"""The Blender interpreter the Blender comparisons run in (bpy 5.0.1 needs numpy < 2, so its own venv)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bpy_python() -> str:
    """$SHAPEGEN4D_BPY_PYTHON, default <repo>/.venv-bpy/bin/python. Missing: skip, or fail under CI."""
    python = os.environ.get("SHAPEGEN4D_BPY_PYTHON") or str(REPO / ".venv-bpy" / "bin" / "python")
    if not Path(python).exists():
        msg = (f"Blender reference interpreter {python} not found: set SHAPEGEN4D_BPY_PYTHON or run "
               "`python3 -m venv .venv-bpy && .venv-bpy/bin/pip install bpy==5.0.1`")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return python


def run_blender(script: str, job, folder: Path, timeout: int = 300) -> None:
    """Run tests/<script> under Blender's interpreter on `job` (written to folder/job.json)."""
    python = bpy_python()
    (folder / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([python, str(REPO / "tests" / script), str(folder / "job.json")],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        pytest.fail(f"{script} failed with exit code {proc.returncode}")
