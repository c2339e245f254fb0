"""Textured conditioning frames: the glTF's own materials reach the pixels.

Each asset is a quad facing the front camera, textured with four coloured quadrants, written as a
real glTF (pipelines.gltf_write), then read, baked and rendered the way the dataset job does.
Under uniform lighting (ambient 1, no directional light) a pixel shows its texel's colour, so the
expected colour at a point of the quad follows from its UV alone: the texture's orientation, the
TEXCOORD set, KHR_texture_transform (as the extension's GLSL defines it), samplers, alpha modes and
the emissive factor are each checked against that analytic answer. Pixels come back within a few
levels of the texel (pyrender's approximate sRGB curves: measured <= 5 of 255).
"""
import io
import shutil

import numpy as np
from PIL import Image

from pipelines import render  # noqa: F401  (first: it picks the headless GL platform)
from pipelines import analytic, bake, gltf_io, gltf_write as gw, materials, process, sources
from pipelines.config import DatasetConfig
from jobs import config as config_lib

QUADRANTS = {"tl": (200, 60, 30), "tr": (40, 180, 70), "bl": (30, 80, 210), "br": (230, 220, 40)}
UNIFORM = render.RenderConfig(resolution=128, ambient=1.0, key_light=0.0, fill_light=0.0)
TOL = 8
CORNERS = np.array([[-0.8, 0.8, 0], [0.8, 0.8, 0], [-0.8, -0.8, 0], [0.8, -0.8, 0]], float)
UV = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)  # the quad's top-left corner at uv (0, 0)


def _png(alpha_tl: int = 255) -> bytes:
    img = np.zeros((64, 64, 4), np.uint8)
    img[..., 3] = 255
    img[:32, :32, 3] = alpha_tl
    for name, (rows, cols) in {"tl": (slice(0, 32), slice(0, 32)), "tr": (slice(0, 32), slice(32, 64)),
                               "bl": (slice(32, 64), slice(0, 32)), "br": (slice(32, 64), slice(32, 64))}.items():
        img[rows, cols, :3] = QUADRANTS[name]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _quad_asset(texture_info: dict | None = None, texcoords=(UV,), wrap=(gw_clamp := 33071, 33071), png: bytes | None = None,
                **material) -> bytes:
    b = gw.GltfBuilder()
    if texture_info is not None:
        tex = b.add_texture(b.add_image(png or _png()), wrap=wrap, filters=(9728, 9728))  # NEAREST: crisp quadrants
        material["base_color_texture"] = {"index": tex, **texture_info}
    mat = b.add_material(**{"base_color": (1.0, 1.0, 1.0, 1.0), **material})
    prim = gw.Primitive(CORNERS, np.array([[0, 2, 1], [1, 2, 3]]), texcoords=list(texcoords), material=mat)
    node = b.add_node(mesh=b.add_mesh([prim]))
    b.add_animation([gw.Channel(node, "translation", np.array([0.0, 1.0]), np.array([[0, 0, 0], [0, 0, 0.05]]))])
    return b.to_glb()


def _render(glb: bytes, cfg: render.RenderConfig = UNIFORM) -> tuple[np.ndarray, render.RenderedClip]:
    g = gltf_io.load_gltf(glb)
    baked = bake.bake(g, 0, np.array([0.0, 1.0]))
    mats = materials.load(g, np.unique(baked.face_material), 10**8)
    clip = render.render_clip(baked.vertices, baked.faces, baked.colors, cfg, np.random.default_rng(0),
                              render.Appearance(baked.texcoords, baked.face_material, mats))
    return np.asarray(Image.open(io.BytesIO(clip.png[0]))), clip


def _at(img: np.ndarray, clip: render.RenderedClip, uv: tuple[float, float]) -> np.ndarray:
    """The pixel showing the quad's point at untransformed uv (u right, v down across the quad)."""
    p = np.array([-0.8 + 1.6 * uv[0], 0.8 - 1.6 * uv[1], 0.0, 1.0])
    x = clip.intrinsics @ (clip.extrinsics @ p)[:3]
    col, row = np.round(x[:2] / x[2]).astype(int)
    return img[row, col].astype(int)


def _quadrant(u: float, v: float) -> str:
    return ("t" if v < 0.5 else "b") + ("l" if u < 0.5 else "r")


# Points of the quad (u right, v down), clear of every texel boundary the checks below put them on.
SAMPLES = [(0.2, 0.2), (0.7, 0.15), (0.15, 0.7), (0.8, 0.85), (0.1, 0.6), (0.9, 0.4)]


def _check(img, clip, expect) -> None:
    for uv in SAMPLES:
        want = np.array(QUADRANTS[expect(*uv)] + (255,))
        got = _at(img, clip, uv)
        assert np.abs(got - want).max() <= TOL, (uv, expect(*uv), got, want)


def test_texture_colours_reach_the_pixels_at_their_uvs():
    img, clip = _render(_quad_asset({}))
    _check(img, clip, _quadrant)


def test_the_second_texcoord_set():
    junk = np.full((4, 2), 0.9)  # TEXCOORD_0 would paint the whole quad "br"
    img, clip = _render(_quad_asset({"texCoord": 1}, texcoords=(junk, UV)))
    _check(img, clip, _quadrant)


def test_khr_texture_transform_offset_scale_and_rotation():
    # Scale 0.5 then offset 0.5: every uv lands in [0.5, 1]^2, the "br" quadrant.
    img, clip = _render(_quad_asset({"extensions": {"KHR_texture_transform": {"offset": [0.5, 0.5], "scale": [0.5, 0.5]}}}))
    _check(img, clip, lambda u, v: "br")
    # A quarter turn, then offset (1, 0): by the extension's matrix, (u, v) -> (1 - v, u).
    img, clip = _render(_quad_asset({"extensions": {"KHR_texture_transform": {"offset": [1.0, 0.0], "rotation": np.pi / 2}}}))
    _check(img, clip, lambda u, v: _quadrant(1 - v, u))


def test_repeat_sampler_tiles_the_texture():
    img, clip = _render(_quad_asset({}, texcoords=(UV * 2,), wrap=(10497, 10497)))
    _check(img, clip, lambda u, v: _quadrant((2 * u) % 1, (2 * v) % 1))


def test_base_colour_factor_and_alpha_modes():
    # The factor multiplies the texture (linear): 0.5 on red halves it before the sRGB curve.
    img, clip = _render(_quad_asset({}, base_color=(0.5, 1.0, 1.0, 1.0)))
    tl = _at(img, clip, (0.25, 0.25))
    lin = (200 / 255) ** 2.2 * 0.5
    assert abs(tl[0] - 255 * lin ** (1 / 2.2)) <= TOL and abs(tl[1] - 60) <= TOL
    # MASK: the top-left quadrant's alpha (40/255) is under the cutoff -> cut out; the rest opaque.
    png = _png(alpha_tl=40)
    img, clip = _render(_quad_asset({}, png=png, alpha_mode="MASK", alpha_cutoff=0.5))
    assert _at(img, clip, (0.25, 0.25))[3] == 0
    assert np.abs(_at(img, clip, (0.75, 0.75)) - (*QUADRANTS["br"], 255)).max() <= TOL
    # OPAQUE ignores the texture's alpha entirely.
    img, clip = _render(_quad_asset({}, png=png))
    assert np.abs(_at(img, clip, (0.25, 0.25)) - (*QUADRANTS["tl"], 255)).max() <= TOL


def test_emissive_factor_is_applied_once():
    # Black base colour, emissive (0.5, 0, 0): the pixel is linear 0.5 red, not 0.25.
    img, clip = _render(_quad_asset(None, base_color=(0.0, 0.0, 0.0, 1.0), emissive=(0.5, 0.0, 0.0)))
    px = _at(img, clip, (0.5, 0.5))
    assert abs(px[0] - 255 * 0.5 ** (1 / 2.2)) <= TOL and px[1] <= TOL and px[3] == 255


def test_emissive_texture_beside_a_base_colour_texture():
    # Black base texture, the quadrant texture as emissive (factor 1): the emissive map shows.
    b = gw.GltfBuilder()
    black = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8) + np.array([0, 0, 0, 255], np.uint8)).save(black, format="PNG")
    base = b.add_texture(b.add_image(black.getvalue()), wrap=(33071, 33071), filters=(9728, 9728))
    glow = b.add_texture(b.add_image(_png()), wrap=(33071, 33071), filters=(9728, 9728))
    mat = b.add_material(base_color=(1.0, 1.0, 1.0, 1.0), base_color_texture={"index": base},
                         emissive=(1.0, 1.0, 1.0), emissive_texture={"index": glow})
    node = b.add_node(mesh=b.add_mesh([gw.Primitive(CORNERS, np.array([[0, 2, 1], [1, 2, 3]]), texcoords=[UV], material=mat)]))
    b.add_animation([gw.Channel(node, "translation", np.array([0.0, 1.0]), np.array([[0, 0, 0], [0, 0, 0.05]]))])
    img, clip = _render(b.to_glb())
    _check(img, clip, _quadrant)


def test_dataset_rows_carry_the_textured_video(tmp_path):
    """Through process_asset: the row's first video frame shows the texture, an external image is
    read from the asset's folder, and one pointing outside it is a reject that reads nothing."""
    folder = tmp_path / "assets"
    (folder / "quad").mkdir(parents=True)
    b = gw.GltfBuilder()
    tex = b.add_texture(b.add_image(b"", uri="tex.png"), filters=(9728, 9728))
    mat = b.add_material(base_color=(1.0, 1.0, 1.0, 1.0), base_color_texture={"index": tex})
    node = b.add_node(mesh=b.add_mesh([gw.Primitive(CORNERS, np.array([[0, 2, 1], [1, 2, 3]]), texcoords=[UV], material=mat)]))
    b.add_animation([gw.Channel(node, "translation", np.array([0.0, 1.0]), np.array([[0, 0, 0], [0.3, 0, 0]]))])
    b.to_gltf_files(folder / "quad", "quad")
    (folder / "quad" / "tex.png").write_bytes(_png())
    shutil.copytree(folder / "quad", folder / "escape")
    (folder / "escape" / "quad.gltf").write_text((folder / "quad" / "quad.gltf").read_text().replace('"tex.png"', '"../secret.png"'))
    (folder / "secret.png").write_bytes(_png())
    cfg = config_lib.load(DatasetConfig, None, [
        f"source.path={folder}", "source.min_faces=0", "num_frames=2", "num_surface_points=256", "num_sharp_points=0",
        "num_queries=16", "queries.num_candidates=256", "watertight.resolution=32", "sdf.num_volume=64",
        "sdf.num_near=64", "render.resolution=96", "render.ambient=1.0", "render.key_light=0.0",
        "render.fill_light=0.0", "motion.min_motion=0"])
    refs = {r.uid: r for r in sources.list_assets(cfg.source)[0]}
    row = process.process_asset(refs["quad__quad"], cfg, "d").rows[0]
    frame = np.asarray(Image.open(io.BytesIO(row["video"][0])))
    colours = {tuple(c) for c in frame[frame[..., 3] == 255][:, :3].reshape(-1, 3)[::7]}
    for name, want in QUADRANTS.items():  # all four quadrants are on screen, nothing grey
        assert any(np.abs(np.array(c) - want).max() <= TOL for c in colours), name
    rejected = process.process_asset(refs["escape__quad"], cfg, "d")
    assert rejected.rows == [] and [(r.stage, r.reason) for r in rejected.rejects] == [("read", "unsafe_uri")]
    assert "secret" not in rejected.rejects[0].detail.replace("../secret.png", "")


def test_untextured_assets_render_as_before():
    """No texture anywhere: the frames are those of the vertex-colour path (render.textures=false),
    except that the factor now tints the diffuse term only, as glTF's BRDF says, where pyrender's
    vertex colour tinted the (4%) specular highlight too: a few levels on lit pixels."""
    g = gltf_io.load_gltf(analytic.SAMPLES["bending_tube"]().glb)
    baked = bake.bake(g, 0, np.linspace(0, 1, 3))
    mats = materials.load(g, np.unique(baked.face_material), 10**8)
    verts = baked.vertices / np.abs(baked.vertices).max()
    cfg = render.RenderConfig(resolution=64)
    a = render.render_clip(verts, baked.faces, baked.colors, cfg, np.random.default_rng(0),
                           render.Appearance(baked.texcoords, baked.face_material, mats))
    b = render.render_clip(verts, baked.faces, baked.colors, cfg, np.random.default_rng(0))
    for pa, pb in zip(a.png, b.png):
        diff = np.abs(np.asarray(Image.open(io.BytesIO(pa)), int) - np.asarray(Image.open(io.BytesIO(pb)), int))
        assert diff.max() <= 12 and (diff > 2).mean() < 0.01, (diff.max(), (diff > 2).mean())
