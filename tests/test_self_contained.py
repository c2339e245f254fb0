"""The repository stands alone: a clone with nothing beside it runs every test and reads every doc.

Code, docs and configs must not point outside the repository (a sibling workspace folder, notes
that only the authors have); what the tests compare against lives in tests/data with its licences.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", ".cache", "mlruns", "out", "__pycache__", ".pytest_cache", "shapegen4d.egg-info"}
# Spelled in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"parents\[2\]", "STACK" + "-NOTES", r"(?<![\w/])" + "DESIGN" + r"\.md"]))


def _files():
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if path.is_file() and not any(part in SKIP or part.startswith(".venv") for part in rel.parts) \
                and path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".mjs", ".cfg", ""}:
            yield rel, path


def test_nothing_points_outside_the_repository():
    hits = [f"{rel}:{n}: {line.strip()}" for rel, path in _files()
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "references to files outside the repository:\n" + "\n".join(hits)


def test_test_data_is_in_the_repository_with_its_licences():
    gltf = ROOT / "tests" / "data" / "gltf"
    models = sorted(p.stem for p in gltf.glob("*.glb"))
    assert len(models) >= 7
    licences = (gltf / "LICENSES.md").read_text()
    assert all(m in licences for m in models), [m for m in models if m not in licences]
    manifests = sorted(p.name for p in (ROOT / "tests" / "data" / "reference").glob("*.params.json"))
    assert manifests == ["hunyuan3d21_dit.params.json", "hunyuan3d21_shapevae.params.json",
                         "step1x3d_geometry_dit_1300m.params.json", "step1x3d_geometry_vae.params.json"]
    assert (ROOT / "docs" / "design.md").is_file()
