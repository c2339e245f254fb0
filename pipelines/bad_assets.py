"""Deliberately broken animated glTF assets, one per reject reason the reader and baker must give.

Each is broken in exactly one way and valid otherwise, so the pipeline has exactly one reason
to reject it (`BAD_ASSET_REASONS`); the hostile corpus (pipelines.hostile) covers the untrusted
file cases at scale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.gltf_write import Channel, GltfBuilder, Primitive


TETRA = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)


def moving_asset(positions: np.ndarray, faces: np.ndarray, times=(0.0, 1.0)) -> GltfBuilder:
    """A one-node mesh translated by a LINEAR animation with the given keyframe times."""
    b = GltfBuilder()
    node = b.add_node(mesh=b.add_mesh([Primitive(positions, faces)]))
    values = np.outer(np.arange(len(times)), [0.5, 0.25, 0.0])
    b.add_animation([Channel(node, "translation", np.asarray(times, np.float64), values)])
    return b


# What the pipeline must answer for each bad asset: (stage, reason) of its one reject row.
BAD_ASSET_REASONS = {
    "corrupt": ("read", "corrupt_file"),
    "truncated": ("read", "truncated_file"),
    "no_animation": ("bake", "no_animation"),
    "non_finite": ("bake", "non_finite_vertices"),
    "zero_area": ("bake", "zero_area"),
    "too_many_faces": ("bake", "too_many_faces"),
    "single_keyframe": ("bake", "single_keyframe"),
    "missing_buffer": ("read", "missing_buffer"),
}


def bad_assets(folder: str | Path, max_faces: int) -> dict[str, str]:
    """Write one deliberately broken asset per case into `folder`; returns case -> file name.

    Each is broken in exactly one way (everything else valid), so a reader/baker rejects it
    for that reason only: corrupt (random bytes), truncated (a valid GLB cut in half),
    no_animation, non_finite (a NaN vertex), zero_area (collinear vertices), too_many_faces
    (max_faces + 1 triangles over 4 vertices), single_keyframe, missing_buffer (.gltf whose
    .bin is absent).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    rng = np.random.default_rng(20240607)
    junk = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    files["corrupt"] = b"\x00" + junk[1:]  # a NUL first byte: neither GLB magic nor JSON
    whole = moving_asset(TETRA, TETRA_FACES).to_glb()
    files["truncated"] = whole[: len(whole) // 2]
    still = GltfBuilder()
    still.add_node(mesh=still.add_mesh([Primitive(TETRA, TETRA_FACES)]))
    files["no_animation"] = still.to_glb()
    nan = TETRA.copy()
    nan[3, 1] = np.nan
    files["non_finite"] = moving_asset(nan, TETRA_FACES).to_glb()
    line = np.outer(np.arange(4.0), [1.0, 0.5, 0.25])  # 4 distinct collinear points
    files["zero_area"] = moving_asset(line, TETRA_FACES).to_glb()
    many = np.resize(TETRA_FACES, (max_faces + 1, 3))  # repeats the 4 faces: few vertices, many indices
    files["too_many_faces"] = moving_asset(TETRA, many).to_glb()
    files["single_keyframe"] = moving_asset(TETRA, TETRA_FACES, times=(0.0,)).to_glb()
    out = {}
    for case, data in files.items():
        (folder / f"{case}.glb").write_bytes(data)
        out[case] = f"{case}.glb"
    gltf, bin_ = moving_asset(TETRA, TETRA_FACES).to_gltf_files(folder, "missing_buffer")
    bin_.unlink()
    out["missing_buffer"] = gltf.name
    return out
