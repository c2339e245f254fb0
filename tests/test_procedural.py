"""The glTF writer and the procedural samples: Khronos validation, determinism against the
committed files, analytic ground truth (rest pose and the baker), closed sources, bad assets."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import trimesh
from PIL import Image

from pipelines import analytic, bad_assets, bake, gltf_io, normalize, procedural, queries, shapes, surface, watertight
from pipelines.errors import AssetError
from pipelines.gltf_write import Channel, GltfBuilder, Primitive

REPO = Path(__file__).resolve().parents[1]
VALIDATE = REPO / "tests" / "gltf_validate.mjs"
VALIDATOR_DIR = Path(os.environ.get("GLTF_VALIDATOR_DIR", REPO / ".cache/npm/node_modules/gltf-validator"))
INSTALL = "npm install --prefix .cache/npm gltf-validator@2.0.0-dev.3.10"
# Two random assets of every procedural family go through the validator too.
RANDOM_UIDS = [procedural.asset_uid(f, 0, i) for f in procedural.FAMILIES for i in (0, 1)]


@pytest.fixture(scope="module")
def samples() -> dict[str, analytic.Sample]:
    return {name: build() for name, build in analytic.SAMPLES.items()}


def _glb_json(glb: bytes) -> dict:
    length, kind = struct.unpack_from("<II", glb, 12)
    assert kind == 0x4E4F534A
    return json.loads(glb[20 : 20 + length])


def _positions_from_file(glb: bytes) -> np.ndarray:
    """POSITION data decoded by pygltflib (an independent reader), mesh nodes in scene DFS order."""
    g = pygltflib.GLTF2.load_from_bytes(glb)
    blob = g.binary_blob()
    out, stack = [], list(reversed(g.scenes[g.scene].nodes))
    while stack:
        node = g.nodes[stack.pop()]
        if node.mesh is not None:
            for prim in g.meshes[node.mesh].primitives:
                acc = g.accessors[prim.attributes.POSITION]
                view = g.bufferViews[acc.bufferView]
                start = view.byteOffset + (acc.byteOffset or 0)
                out.append(np.frombuffer(blob, "<f4", acc.count * 3, start).reshape(-1, 3))
        stack.extend(reversed(node.children or []))
    return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------- Khronos validator


def _feature_asset() -> GltfBuilder:
    """Every writer feature in one file: 2 meshes (one with 2 primitives), hierarchy, a skin
    with 6 influences (JOINTS_1), morph targets, LINEAR/STEP/CUBICSPLINE samplers, and a textured
    material (embedded PNG, sampler, TEXCOORD_0/1, KHR_texture_transform, emissive, MASK)."""
    b = GltfBuilder()
    m0, m1 = b.add_material((1, 0, 0, 1)), b.add_material((0, 0.5, 1, 0.5), double_sided=True)
    png = io.BytesIO()
    Image.fromarray(np.arange(4 * 4 * 4, dtype=np.uint8).reshape(4, 4, 4)).save(png, format="PNG")
    tex = b.add_texture(b.add_image(png.getvalue()), wrap=(33648, 33071), filters=(9728, 9987))
    m2 = b.add_material(base_color_texture={"index": tex, "texCoord": 1, "extensions": {"KHR_texture_transform": {
        "offset": [0.5, 0.0], "rotation": 0.3, "scale": [2.0, 1.0]}}}, emissive=(0.2, 0.1, 0.0),
        emissive_texture={"index": tex}, alpha_mode="MASK", alpha_cutoff=0.3)
    v, f = shapes.box_grid((1.0, 1.0, 1.0), (2, 2, 2))
    s, sf = shapes.uv_sphere(0.5, 6, 8)
    bump = np.stack([np.zeros(len(v)), v[:, 0], np.zeros(len(v))], 1)
    mesh_a = b.add_mesh([
        Primitive(v, f, normals=surface.vertex_normals(v, f), targets=[bump, 0.5 * bump], material=m0),
        Primitive(v + 2, f, colors=np.full((len(v), 4), 0.5), targets=[bump, -bump], material=m1),
    ], weights=[0.25, 0.0])
    joints = [b.add_node(name="j0")]
    for k in range(1, 6):
        joints.append(b.add_node(parent=joints[-1], translation=(0, 0.2, 0)))
    ibm = np.stack([np.eye(4)] * 6)
    ibm[:, 1, 3] = -0.2 * np.arange(6)
    skin = b.add_skin(joints, ibm, skeleton=joints[0])
    w = np.tile(np.arange(1.0, 7.0), (len(s), 1))
    uv = (s[:, :2] + 0.5).clip(0, 1)
    mesh_b = b.add_mesh([Primitive(s, sf, joints=np.tile(np.arange(6), (len(s), 1)), weights=w, texcoords=[uv, 1 - uv],
                                   material=m2)])
    a = b.add_node(mesh=mesh_a, translation=(1, 2, 3), rotation=(0, 0, 0.6, 0.8), scale=(1, 2, 1))
    b.add_node(mesh=mesh_b, skin=skin)
    t = np.array([0.0, 0.5, 1.0])
    q = np.array([[0, 0, 0, 1], [0, 0, 0.6, 0.8], [0, 0.6, 0, 0.8]], float)
    b.add_animation([
        Channel(a, "translation", t, [[0, 0, 0], [1, 0, 0], [1, 1, 0]], "STEP"),
        Channel(a, "scale", t, [[1, 1, 1], [2, 1, 1], [1, 1, 1]]),
        Channel(joints[2], "rotation", t, np.stack([np.zeros_like(q), q, np.zeros_like(q)], 1), "CUBICSPLINE"),
        Channel(a, "weights", t, np.stack([np.zeros((3, 2)), [[0, 0], [1, 0], [0, 1]], np.zeros((3, 2))], 1), "CUBICSPLINE"),
    ], name="all")
    return b


@pytest.fixture(scope="module")
def reports(samples, tmp_path_factory) -> dict[str, dict]:
    """Validator report per file name (or {"error": ...} for unclassifiable input)."""
    node = shutil.which("node")
    if node is None or not (VALIDATOR_DIR / "module.mjs").exists():
        msg = f"Khronos glTF validator unavailable (node={node}, {VALIDATOR_DIR}); install it with: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    d = tmp_path_factory.mktemp("validate")
    for name, s in samples.items():
        (d / f"{name}.glb").write_bytes(s.glb)
    for uid in RANDOM_UIDS:
        (d / f"{uid}.glb").write_bytes(procedural.build_uid(uid).glb)
    feat = _feature_asset()
    (d / "features.glb").write_bytes(feat.to_glb())
    feat.to_gltf_files(d, "features_ext")
    bad_assets.bad_assets(d / "bad", max_faces=50)
    files = sorted(d.glob("*.gl*")) + [d / "bad" / "missing_buffer.gltf", d / "bad" / "truncated.glb", d / "bad" / "corrupt.glb"]
    run = subprocess.run([node, str(VALIDATE), *map(str, files)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GLTF_VALIDATOR_DIR": str(VALIDATOR_DIR)})
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    return {("bad/" if f.parent.name == "bad" else "") + f.name: r for f, r in zip(files, out)}


def _issues(report: dict) -> dict:
    return report["issues"]


@pytest.mark.parametrize("name", [*analytic.SAMPLES, "features", "features_ext", *RANDOM_UIDS])
def test_written_files_pass_the_khronos_validator(reports, name):
    report = reports.get(f"{name}.glb") or reports[f"{name}.gltf"]
    issues = _issues(report)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    info = report["info"]
    if name in analytic.SAMPLES or name in RANDOM_UIDS:
        assert info["animationCount"] == 1 and info["drawCallCount"] >= 1


def test_validator_harness_sees_real_errors(reports):
    """Broken files must come back broken: the harness neither hides errors nor external files."""
    assert [m["code"] for m in _issues(reports["bad/missing_buffer.gltf"])["messages"]] == ["IO_ERROR"]
    assert _issues(reports["bad/truncated.glb"])["numErrors"] > 0
    assert "could not detect" in reports["bad/corrupt.glb"]["error"]
    # The .gltf + .bin twin of features.glb was read through its external buffer.
    assert reports["features_ext.gltf"]["info"]["resources"][0]["storage"] == "external"


# ---------------------------------------------------------------- determinism and file layout


def test_committed_samples_are_byte_identical_to_fresh_ones(samples, tmp_path):
    written = analytic.write_samples(tmp_path)
    assert sorted(written) == sorted(analytic.SAMPLES)
    committed = sorted(p.name for p in analytic.SAMPLES_DIR.glob("*.glb"))
    assert committed == sorted(f"{n}.glb" for n in analytic.SAMPLES)
    for name, path in written.items():
        fresh = path.read_bytes()
        assert fresh == samples[name].glb, f"{name}: two builds differ"
        assert (analytic.SAMPLES_DIR / f"{name}.glb").read_bytes() == fresh, (
            f"{name}: committed file is stale; run python -m pipelines.procedural --out pipelines/samples")
    assert sum(p.stat().st_size for p in analytic.SAMPLES_DIR.iterdir()) < 1_000_000


def test_glb_layout_minmax_and_features(samples):
    for name, s in samples.items():
        glb = s.glb
        magic, version, length = struct.unpack_from("<4sII", glb)
        assert (magic, version, length) == (b"glTF", 2, len(glb)) and len(glb) % 4 == 0
        doc = _glb_json(glb)
        assert all(v["byteOffset"] % 4 == 0 for v in doc["bufferViews"])
        rest = _positions_from_file(glb)
        np.testing.assert_array_equal(rest, s.rest)  # the truth is built on the stored numbers
        for mesh in doc["meshes"]:
            for prim in mesh["primitives"]:
                acc = doc["accessors"][prim["attributes"]["POSITION"]]
                assert doc["bufferViews"][acc["bufferView"]]["target"] == 34962
                assert doc["bufferViews"][doc["accessors"][prim["indices"]]["bufferView"]]["target"] == 34963
                assert doc["accessors"][prim["indices"]]["componentType"] == 5125
        # Exact bounds of the stored float32 data, per POSITION accessor.
        g = pygltflib.GLTF2.load_from_bytes(glb)
        for mesh in g.meshes:
            for prim in mesh.primitives:
                acc = g.accessors[prim.attributes.POSITION]
                view = g.bufferViews[acc.bufferView]
                data = np.frombuffer(g.binary_blob(), "<f4", acc.count * 3, view.byteOffset).reshape(-1, 3)
                assert acc.min == data.min(0).tolist() and acc.max == data.max(0).tolist()
    tube = _glb_json(samples["bending_tube"].glb)
    assert {"JOINTS_0", "JOINTS_1", "WEIGHTS_0", "WEIGHTS_1"} <= set(tube["meshes"][0]["primitives"][0]["attributes"])
    assert len(_glb_json(samples["morph_wave"].glb)["meshes"][0]["primitives"][0]["targets"]) == 4
    sphere = _glb_json(samples["swelling_sphere"].glb)
    assert sphere["animations"][0]["samplers"][0]["interpolation"] == "CUBICSPLINE"


def test_gltf_files_twin_matches_glb(tmp_path):
    b = _feature_asset()
    gltf, bin_ = b.to_gltf_files(tmp_path, "twin")
    doc = json.loads(gltf.read_text())
    glb_doc = _glb_json(b.to_glb())
    assert doc["buffers"] == [{"byteLength": bin_.stat().st_size, "uri": "twin.bin"}]
    doc["buffers"][0].pop("uri")
    assert doc == glb_doc
    assert b.to_glb().endswith(bin_.read_bytes() + b"\0" * (-bin_.stat().st_size % 4))


def test_writer_rejects_inconsistent_input():
    b = GltfBuilder()
    v, f = shapes.box_grid((1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="morph targets"):
        b.add_mesh([Primitive(v, f, targets=[v]), Primitive(v, f)])
    with pytest.raises(ValueError, match="out of range"):
        b.add_mesh([Primitive(v, f + 100)])
    with pytest.raises(ValueError, match="go together"):
        b.add_mesh([Primitive(v, f, joints=np.zeros((len(v), 4), int))])
    with pytest.raises(ValueError, match="interpolation"):
        b.add_animation([Channel(0, "translation", [0, 1], np.zeros((2, 3)), "SMOOTH")])


# ---------------------------------------------------------------- ground truth


def test_rest_pose_at_time_zero(samples):
    # Skinned with identity bind rotations, and morph weights 0: exactly the stored data.
    for name in ("bending_tube", "morph_wave"):
        np.testing.assert_allclose(samples[name].positions(0.0), samples[name].rest, rtol=0, atol=1e-12)
    # Node-animated samples: stored data under the static node TRS written in the JSON.
    sphere = samples["swelling_sphere"]
    offset = _glb_json(sphere.glb)["nodes"][0]["translation"]
    np.testing.assert_allclose(sphere.positions(0.0), sphere.rest + offset, rtol=0, atol=1e-12)
    parts = samples["separating_parts"]
    doc = _glb_json(parts.glb)
    nodes = doc["nodes"]
    rig = trimesh.transformations.quaternion_matrix(np.roll(nodes[0]["rotation"], 1))  # glTF is x,y,z,w
    rig[:3, 3] = nodes[0]["translation"]
    n_box = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["count"]
    expect = np.concatenate([
        trimesh.transform_points(parts.rest[:n_box] + nodes[1]["translation"], rig),
        trimesh.transform_points(parts.rest[n_box:] + nodes[2]["translation"], rig),
    ])
    np.testing.assert_allclose(parts.positions(0.0), expect, rtol=0, atol=1e-12)


def test_analytic_positions_match_the_baker(samples):
    """The truth is independent of the baker; both must agree on- and off-keyframe."""
    for name, s in samples.items():
        g = gltf_io.load_gltf(s.glb)
        (info,) = bake.list_animations(g)
        assert (info.start, info.end) == (0.0, s.duration)
        times = np.concatenate([np.linspace(0, s.duration, 9), [0.03125, 0.7071, s.duration * 0.613, s.duration + 1]])
        baked = bake.bake(g, 0, times)
        np.testing.assert_array_equal(baked.faces, s.faces)
        for k, t in enumerate(times):
            np.testing.assert_allclose(baked.vertices[k], s.positions(float(t)), rtol=0, atol=1e-9, err_msg=f"{name} t={t}")
        motion = max(np.abs(s.positions(float(t)) - s.positions(0.0)).max() for t in times)
        assert motion > 0.1, name


def test_sources_are_closed_and_outward(samples):
    for name, s in samples.items():
        mesh = trimesh.Trimesh(s.rest, s.faces, process=False)
        parts = mesh.split(only_watertight=False)
        assert len(parts) == (2 if name == "separating_parts" else 1), name
        for p in parts:
            assert p.is_watertight and p.is_winding_consistent and p.volume > 0, name
        assert len(np.unique(s.faces)) == len(s.rest), f"{name}: every vertex is used"
        assert 1000 <= len(s.faces) <= 10_000 and 1.0 <= s.duration <= 3.0


def test_trimesh_static_load_face_counts(samples):
    for name, s in samples.items():
        mesh = trimesh.load(io.BytesIO(s.glb), file_type="glb", force="mesh")
        assert len(mesh.faces) == len(s.faces), name


# ---------------------------------------------------------------- bad assets and CLI


BAD_REASONS = bad_assets.BAD_ASSET_REASONS


def test_each_bad_asset_fails_for_its_own_reason(tmp_path):
    bad = bad_assets.bad_assets(tmp_path, max_faces=300)
    assert set(bad) == set(BAD_REASONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(bad.values())  # no .bin left
    for case, fname in bad.items():
        data = (tmp_path / fname).read_bytes()
        with pytest.raises(AssetError) as err:
            g = gltf_io.load_gltf(data, lambda uri, max_bytes: (tmp_path / uri).read_bytes()[:max_bytes])
            bake.bake(g, 0, np.linspace(0, 1, 3), bake.BakeConfig(max_faces=300))
        assert (err.value.stage, err.value.reason) == BAD_REASONS[case], (case, err.value)
    many = _glb_json((tmp_path / "too_many_faces.glb").read_bytes())
    assert many["accessors"][many["meshes"][0]["primitives"][0]["indices"]]["count"] == 3 * 301
    assert (tmp_path / "too_many_faces.glb").stat().st_size < 8_000


def test_cli_writes_samples_and_bad_assets(tmp_path, capsys):
    assert procedural.main(["--out", str(tmp_path), "--bad", "--max-faces", "10"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.glb")) == sorted(f"{n}.glb" for n in analytic.SAMPLES)
    assert len(list((tmp_path / "bad").iterdir())) == len(BAD_REASONS)
    assert "morph_wave" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        procedural.main(["--help"])
    assert e.value.code == 0 and "--out" in capsys.readouterr().out


# ---------------------------------------------------------------- random 4D assets (source.kind=procedural)


def _normalised_frames(glb: bytes, num_frames: int = 16) -> tuple[np.ndarray, np.ndarray, float]:
    """(vertices [T,V,3] in the clip's [-1,1]^3 frame, faces, motion) the way the dataset job gets them."""
    g = gltf_io.load_gltf(glb)
    (info,) = bake.list_animations(g)
    baked = bake.bake(g, 0, bake.frame_times(info, num_frames))
    center, scale = normalize.clip_transform(baked.vertices, normalize.NormalizeConfig())
    v = normalize.apply(baked.vertices, center, scale)
    probe = surface.sample_barycentric(v[0], baked.faces, 4096, np.random.default_rng(0))
    _, motion = normalize.motion(queries.propagate(v, baked.faces, *probe)[..., :3])
    return v, baked.faces, motion


@pytest.mark.parametrize("family", procedural.FAMILIES)
def test_every_family_bakes_into_moving_closed_frames(family):
    for index in range(4):
        a = procedural.build_asset(family, 0, index)
        spec = a.spec
        assert a.uid == f"proc-{family}-0-{index:05d}" and procedural.parse_uid(a.uid) == (family, 0, index)
        g = gltf_io.load_gltf(a.glb)
        (info,) = bake.list_animations(g)
        assert (info.start, info.end) == (0.0, spec.duration) and 1.5 <= spec.duration <= 3.0
        v, faces, motion = _normalised_frames(a.glb)
        # The counts the listing states (without building) are the file's.
        assert v.shape == (16, spec.num_vertices, 3) and faces.shape == (spec.num_faces, 3), a.uid
        assert np.isfinite(v).all() and 500 <= spec.num_faces <= 12_000
        assert motion > 0.05, (a.uid, motion)  # 5x the dataset's default static threshold
        # Frequencies are not whole cycles per clip, so even 3 frames (0, T/2, T) see motion.
        assert _normalised_frames(a.glb, num_frames=3)[2] > 0.02, a.uid
        # Every part is a closed, consistently outward surface in every frame we look at.
        for t in (0, 8):
            parts = trimesh.Trimesh(v[t], faces, process=False).split(only_watertight=False)
            for p in parts:
                assert p.is_watertight and p.is_winding_consistent and p.volume > 0, (a.uid, t)
        # An independent reader sees the same triangles.
        assert len(trimesh.load(io.BytesIO(a.glb), file_type="glb", force="mesh").faces) == spec.num_faces


def test_random_assets_are_deterministic_and_distinct():
    uids = [procedural.asset_uid(f, 7, i) for f in procedural.FAMILIES for i in (3, 4)]
    first = {u: procedural.build_uid(u).glb for u in uids}
    assert all(procedural.build_uid(u).glb == first[u] for u in uids)
    assert len(set(first.values())) == len(uids)  # another index (or family) is another asset
    assert procedural.build_asset("tube", 8, 3).glb != first["proc-tube-7-00003"]  # and another seed
    # A fresh interpreter with another hash seed writes the same bytes.
    code = ("import hashlib, sys; from pipelines import procedural; "
            "print(' '.join(hashlib.sha256(procedural.build_uid(u).glb).hexdigest() for u in sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", code, *uids], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert run.returncode == 0, run.stderr
    import hashlib

    assert run.stdout.split() == [hashlib.sha256(first[u]).hexdigest() for u in uids]


def test_random_parameters_vary_per_asset():
    specs = {f: [procedural.asset_spec(f, 0, i) for i in range(40)] for f in procedural.FAMILIES}
    for f, ss in specs.items():
        assert len({s.duration for s in ss}) >= 5, f
        assert len({s.num_faces for s in ss}) >= 20, f
        assert len({json.dumps(s.params, sort_keys=True) for s in ss}) == 40, f
    assert {len(s.params["joints"]) + 1 for s in specs["tube"]} == set(range(3, 8))
    assert {len(s.params["targets"]) for s in specs["blob"]} == {1, 2, 3}
    assert {s.params["interpolation"] for s in specs["blob"]} == {"CUBICSPLINE", "LINEAR"}
    assert {len(s.params["limbs"]) for s in specs["figure"]} == set(range(2, 7))
    assert {s.params["mode"] for s in specs["split"]} == {"split", "merge", "bounce"}
    assert {len(s.params["shapes"]) for s in specs["split"]} == {2, 3, 4}
    assert {s.params["mode"] for s in specs["wave"]} == {"spot", "ridge"}
    json.dumps([s.params for ss in specs.values() for s in ss])  # parameters travel as JSON metadata
    with pytest.raises(ValueError, match="unknown procedural family"):
        procedural.asset_spec("cloud", 0, 0)
    for bad in ("proc-cloud-0-00001", "proc-tube-x-1", "tube-0-1", "proc-tube-0-1", "proc-tube-00-00001"):
        with pytest.raises(ValueError, match="not a procedural asset uid"):
            procedural.parse_uid(bad)


def test_split_family_changes_the_watertight_topology():
    """Parts that start overlapping and end apart: one watertight component, then several."""
    index = next(i for i in range(100) if procedural.asset_spec("split", 0, i).params["mode"] == "split")
    a = procedural.build_asset("split", 0, index)
    v, faces, _ = _normalised_frames(a.glb, num_frames=5)
    cfg = watertight.WatertightConfig(resolution=48, min_component_ratio=0.0)
    counts = [watertight.make_watertight(v[t], faces, cfg)[2]["num_components"] for t in (0, 4)]
    assert counts == [1, len(a.spec.params["shapes"])], counts


def test_cli_writes_random_assets_with_sidecars(tmp_path, capsys):
    assert procedural.main(["--out", str(tmp_path), "--random", "4", "--seed", "3", "--families", "wave,tube"]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.glb"))
    assert names == ["proc-tube-3-00001.glb", "proc-tube-3-00003.glb", "proc-wave-3-00000.glb", "proc-wave-3-00002.glb"]
    meta = json.loads((tmp_path / "proc-tube-3-00001.meta.json").read_text())
    assert meta["license"] == "cc0" and meta["faceCount"] == procedural.asset_spec("tube", 3, 1).num_faces
    assert (tmp_path / "proc-tube-3-00001.glb").read_bytes() == procedural.build_asset("tube", 3, 1).glb
    assert "proc-wave-3-00000" in capsys.readouterr().out
