"""glTF materials as the conditioning renderer needs them: base colour and emissive textures.

The model sees the clip through its rendered video, and at inference it gets real, coloured
videos: an asset rendered without its textures would teach it on grey frames. So every material
a kept face uses is resolved here, from the glTF alone:

- base colour: `baseColorFactor` (x COLOR_0, applied per vertex by the bake) x `baseColorTexture`
  (KHR_materials_pbrSpecularGlossiness: `diffuseFactor` / `diffuseTexture`);
- emissive: `emissiveFactor` x `emissiveTexture` (x KHR_materials_emissive_strength);
- the texture's sampler (wrap and filter modes), its `texCoord` set and its KHR_texture_transform
  (offset, rotation, scale, texCoord override), applied to the UVs here so the renderer needs
  only one UV set per material;
- alpha: `alphaMode` OPAQUE (alpha ignored), MASK (alpha below `alphaCutoff` is cut out: the
  texture's alpha is made 0 or 255 here), BLEND (kept).

Images come from the same confined reader as buffers (pipelines.sources: an external image
cannot leave the asset's folder) and are decoded with Pillow only after their declared size has
been checked against `limits.max_texture_pixels` (a PNG header can claim 10^5 x 10^5 pixels).
Textures larger than `max_size` are downscaled: the frames are 518 px.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from pipelines.errors import AssetError
from pipelines.gltf_io import Gltf

REPEAT, CLAMP_TO_EDGE, MIRRORED_REPEAT = 10497, 33071, 33648
NEAREST, LINEAR = 9728, 9729
_MIPMAP_FILTERS = (9984, 9985, 9986, 9987)
# Texture sources in order of preference: Pillow decodes PNG, JPEG and WebP.
_DECODABLE_SOURCES = ("EXT_texture_webp",)
_UNDECODABLE_SOURCES = ("KHR_texture_basisu", "EXT_texture_avif")


@dataclass
class Texture:
    rgba: np.ndarray  # [H,W,4] uint8, as stored (sRGB for colour textures), row 0 = top (glTF's v = 0)
    wrap_s: int = REPEAT
    wrap_t: int = REPEAT
    mag_filter: int = LINEAR
    min_filter: int | None = None  # None: the renderer's default (mipmapped linear)


@dataclass
class Material:
    base_color_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # also in the bake's vertex colours
    base_color: Texture | None = None
    base_color_uv: tuple[int, np.ndarray] = (0, np.eye(3))  # (TEXCOORD set, 3x3 uv transform)
    emissive_factor: tuple[float, float, float] = (0.0, 0.0, 0.0)  # linear RGB
    emissive: Texture | None = None
    emissive_uv: tuple[int, np.ndarray] = (0, np.eye(3))
    alpha_mode: str = "OPAQUE"  # OPAQUE | MASK | BLEND
    alpha_cutoff: float = 0.5

    def emissive_shares_uv(self) -> bool:
        """Whether the emissive texture reads the base colour texture's UVs (the renderer has one
        UV set per material; an emissive map on other UVs is left out)."""
        (a, ma), (b, mb) = self.base_color_uv, self.emissive_uv
        return self.base_color is not None and a == b and bool(np.allclose(ma, mb))

    def uv(self, texcoords_V22: np.ndarray) -> np.ndarray | None:
        """[V,2] float32 UVs for this material's base colour texture (its set, transformed), or None."""
        if self.base_color is None:
            return None
        return apply_uv(texcoords_V22, *self.base_color_uv)


def apply_uv(texcoords_V22: np.ndarray, texcoord: int, transform: np.ndarray) -> np.ndarray:
    uv = np.nan_to_num(np.asarray(texcoords_V22, np.float64)[:, texcoord], nan=0.0, posinf=0.0, neginf=0.0)
    return (uv @ transform[:2, :2].T + transform[:2, 2]).astype(np.float32)


def _err(reason: str, detail: str) -> AssetError:
    return AssetError("read", reason, detail)


def _numbers(value, n: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, np.float64) if isinstance(value, list) else np.zeros(0)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise _err("corrupt_file", f"{what} must be {n} finite numbers, got {value!r}")
    return arr


def uv_transform(info: dict, what: str) -> tuple[int, np.ndarray]:
    """(TEXCOORD set, 3x3 matrix) of a textureInfo, with KHR_texture_transform applied:
    uv' = T(offset) R(rotation) S(scale) uv, as the extension specifies."""
    texcoord = info.get("texCoord", 0)
    ext = (info.get("extensions") or {}).get("KHR_texture_transform")
    m = np.eye(3)
    if isinstance(ext, dict):
        off = _numbers(ext.get("offset", [0.0, 0.0]), 2, f"{what} KHR_texture_transform offset")
        scale = _numbers(ext.get("scale", [1.0, 1.0]), 2, f"{what} KHR_texture_transform scale")
        rot = float(_numbers([ext.get("rotation", 0.0)], 1, f"{what} KHR_texture_transform rotation")[0])
        c, s = np.cos(rot), np.sin(rot)
        translation = np.array([[1, 0, off[0]], [0, 1, off[1]], [0, 0, 1.0]])
        rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])  # the spec's column-major GLSL mat3, as rows
        m = translation @ rotation @ np.diag([scale[0], scale[1], 1.0])
        texcoord = ext.get("texCoord", texcoord)
    if texcoord not in (0, 1) or isinstance(texcoord, bool):
        raise _err("unsupported_texcoord", f"{what} uses TEXCOORD_{texcoord}; TEXCOORD_0 and _1 are read")
    return int(texcoord), m


def _image_index(g: Gltf, texture: dict, what: str) -> int:
    exts = texture.get("extensions") or {}
    for name in _DECODABLE_SOURCES:
        if isinstance(exts.get(name), dict) and "source" in exts[name]:
            return exts[name]["source"]
    if "source" in texture:
        return texture["source"]
    has = [n for n in _UNDECODABLE_SOURCES if n in exts]
    raise AssetError("render", "unsupported_texture", f"{what} has no image Pillow can decode"
                     + (f" (only {', '.join(has)})" if has else ""))


def decode_image(data: bytes, max_pixels: int, max_size: int, what: str) -> np.ndarray:
    """Encoded image -> [H,W,4] uint8 RGBA, its size checked from the header before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if max_pixels and w * h > max_pixels:
            raise _err("too_large", f"{what}: {w} x {h} = {w * h:,} pixels > limits.max_texture_pixels={max_pixels:,}")
        if max(w, h) > max_size:
            im.draft("RGB", (max_size, max_size))  # JPEG: decode at a reduced scale directly
        im = im.convert("RGBA")
        if max(im.size) > max_size:
            k = max_size / max(im.size)
            im = im.resize((max(1, round(im.size[0] * k)), max(1, round(im.size[1] * k))), Image.Resampling.BOX)
        return np.asarray(im, np.uint8).copy()
    except AssetError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise _err("corrupt_image", f"{what} cannot be decoded: {type(e).__name__}: {e}") from e


def _texture(g: Gltf, info, what: str, max_pixels: int, max_size: int, cache: dict) -> tuple[Texture, tuple[int, np.ndarray]] | None:
    if info is None:
        return None
    if not isinstance(info, dict) or "index" not in info:
        raise _err("corrupt_file", f"{what} is not a textureInfo with an index")
    tex = g.item("textures", info["index"])
    sampler = g.item("samplers", tex["sampler"]) if "sampler" in tex else {}
    texture = Texture(np.zeros((0, 0, 4), np.uint8), sampler.get("wrapS", REPEAT), sampler.get("wrapT", REPEAT),
                      sampler.get("magFilter", LINEAR), sampler.get("minFilter"))
    wraps = (REPEAT, CLAMP_TO_EDGE, MIRRORED_REPEAT)
    if texture.wrap_s not in wraps or texture.wrap_t not in wraps or texture.mag_filter not in (NEAREST, LINEAR) \
            or texture.min_filter not in (None, NEAREST, LINEAR, *_MIPMAP_FILTERS):
        raise _err("corrupt_file", f"{what}: sampler {sampler} has wrap or filter values glTF does not define")
    image = _image_index(g, tex, what)
    if image not in cache:
        cache[image] = decode_image(g.image(image), max_pixels, max_size, f"{what} (image {image})")
    texture.rgba = cache[image]
    return texture, uv_transform(info, what)


def load(g: Gltf, indices, max_pixels: int, max_size: int = 2048) -> dict[int, Material]:
    """Material index -> Material, for `indices` (the materials the kept faces use; -1 = glTF's
    default material: white, no texture)."""
    cache: dict[int, np.ndarray] = {}
    out: dict[int, Material] = {}
    for index in sorted(set(int(i) for i in indices)):
        if index < 0:
            out[index] = Material()
            continue
        mat = g.item("materials", index)
        what = f"material {index}"
        pbr = mat.get("pbrMetallicRoughness") or {}
        sg = (mat.get("extensions") or {}).get("KHR_materials_pbrSpecularGlossiness") or {}
        use_sg = "pbrMetallicRoughness" not in mat and bool(sg)
        base_info = sg.get("diffuseTexture") if use_sg else pbr.get("baseColorTexture")
        factor = (sg.get("diffuseFactor") if use_sg else pbr.get("baseColorFactor")) or [1.0, 1.0, 1.0, 1.0]
        m = Material(base_color_factor=tuple(float(x) for x in _numbers(factor, 4, f"{what} base colour factor")))
        base = _texture(g, base_info, f"{what} base colour texture", max_pixels, max_size, cache)
        if base is not None:
            m.base_color, m.base_color_uv = base
        strength = ((mat.get("extensions") or {}).get("KHR_materials_emissive_strength") or {}).get("emissiveStrength", 1.0)
        emissive = _numbers(mat.get("emissiveFactor", [0.0, 0.0, 0.0]), 3, f"{what} emissiveFactor")
        emissive = emissive * _numbers([strength], 1, f"{what} emissiveStrength")[0]
        m.emissive_factor = tuple(float(x) for x in emissive)
        em = _texture(g, mat.get("emissiveTexture"), f"{what} emissive texture", max_pixels, max_size, cache)
        if em is not None and any(m.emissive_factor):
            m.emissive, m.emissive_uv = em
        m.alpha_mode = mat.get("alphaMode", "OPAQUE")
        if m.alpha_mode not in ("OPAQUE", "MASK", "BLEND"):
            raise _err("corrupt_file", f"{what}: alphaMode {m.alpha_mode!r}")
        m.alpha_cutoff = float(_numbers([mat.get("alphaCutoff", 0.5)], 1, f"{what} alphaCutoff")[0])
        out[index] = m
    return out
