"""The Step1X-3D-compatible base: exact release parameter layout, and the tiny model's maths."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import build_base
from model.checkpoint import CheckpointError, load_base, save_base
from model.dit import timestep_embedding
from model.vae import SelfAttention, fps_queries

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"  # built from the official code, see its README


@pytest.mark.parametrize(
    "name,part,ref,count",
    [("step1x3d", "vae", "step1x3d_geometry_vae", 191_591_553),
     ("step1x3d", "dit", "step1x3d_geometry_dit_1300m", 1_316_287_808),
     ("hunyuan3d21", "vae", "hunyuan3d21_shapevae", 327_746_177),
     ("hunyuan3d21", "dit", "hunyuan3d21_dit", 3_050_758_720)],
)
def test_full_size_matches_the_release_exactly(name, part, ref, count):
    with torch.device("meta"):
        module = getattr(build_base(name, "full"), part)
    expected = json.loads((REFERENCE / f"{ref}.params.json").read_text())["params"]
    got = {k: list(v.shape) for k, v in module.state_dict().items()}
    assert got == expected
    assert sum(p.numel() for p in module.parameters()) == count


def test_hunyuan_release_constants():
    with torch.device("meta"):
        base = build_base("hunyuan3d21", "full")
    assert base.vae.cfg.z_scale_factor == 1.0039506158752403 and base.dit.block_count() == 21


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_base("step1x3d", "tiny")


def _cloud(B=2, N=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(B, N, 3, generator=g) * 2 - 1
    return torch.cat([xyz, F.normalize(xyz, dim=-1)], dim=-1)


def test_vae_encodes_given_queries_and_decodes_an_sdf(tiny):
    vae = tiny.vae.eval()
    surface, sharp = _cloud(), _cloud(seed=1)
    q, sq = surface[:, :6], sharp[:, :4]
    z, mean, logvar = vae.encode(surface, q, sharp, sq, sample=False)
    assert z.shape == mean.shape == logvar.shape == (2, 10, 8)  # 6 uniform + 4 sharp latents
    assert torch.equal(z, mean)
    sdf = vae.query(torch.rand(2, 5, 3), vae.decode(z))
    assert sdf.shape == (2, 5, 1)
    # The encoder's queries are what the caller gives: FPS inside the model is the same path.
    picked = fps_queries(surface, 6)
    z_fps, _, _ = vae.encode(surface, picked, sample=False)
    z_given, _, _ = vae.encode(surface, picked.clone(), sample=False)
    assert torch.equal(z_fps, z_given)
    assert not torch.allclose(z_fps, vae.encode(surface, fps_queries(_cloud(seed=3), 6), sample=False)[0])
    assert (vae.kl(mean, logvar) >= 0).all()


def test_fps_spreads_points():
    pts = _cloud(1, 200)
    picked = fps_queries(pts, 20)[0, :, :3]
    d = torch.cdist(picked, picked) + torch.eye(20) * 10
    rand = pts[0, :20, :3]
    dr = torch.cdist(rand, rand) + torch.eye(20) * 10
    assert d.min() > dr.min()


def test_fused_qkv_is_split_per_head_like_the_release():
    torch.manual_seed(0)
    attn = SelfAttention(width=16, heads=4)
    x = torch.randn(2, 5, 16)
    qkv = attn.c_qkv(x).view(2, 5, 4, 12)  # per head: [q(4) | k(4) | v(4)]
    q, k, v = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
    w = torch.einsum("bthc,bshc->bhts", q, k) / math.sqrt(4)
    ref = torch.einsum("bhts,bshc->bthc", w.softmax(-1), v).reshape(2, 5, 16)
    torch.testing.assert_close(attn(x), attn.c_proj(ref))


def test_timestep_embedding_is_sin_first():
    e = timestep_embedding(torch.tensor([0.0, 500.0]), 8)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(e[1], torch.cat([(500 * freqs).sin(), (500 * freqs).cos()]))
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_dit_forward_and_block_hook(tiny):
    dit = tiny.dit.eval()
    x, t, cond = torch.randn(2, 10, 8), torch.tensor([10.0, 900.0]), torch.randn(2, 7, 32)
    out = dit(x, t, cond)
    assert out.shape == (2, 10, 8)
    calls = []

    def hook(i, x_BLD, c_BND, temb):
        calls.append((i, x_BLD.shape[1], c_BND.shape[1]))
        return x_BLD, c_BND

    torch.testing.assert_close(dit.dit_model.forward_blocks(x, t, cond, hook), out)
    assert calls == [(i, 10, 7) for i in range(4)]  # after each of 2 double + 2 single blocks
    assert not torch.allclose(dit(x, torch.tensor([500.0, 500.0]), cond), out)


def test_release_layout_round_trip_and_strict_errors(tiny, tmp_path):
    save_base(tiny, tmp_path)
    torch.manual_seed(1)
    other = build_base("step1x3d", "tiny")
    x, t, cond = torch.randn(1, 10, 8), torch.tensor([300.0]), torch.randn(1, 7, 32)
    assert not torch.allclose(other.dit(x, t, cond), tiny.dit(x, t, cond))
    load_base(other, tmp_path)
    torch.testing.assert_close(other.dit(x, t, cond), tiny.dit(x, t, cond), rtol=0, atol=0)

    from safetensors.torch import load_file, save_file

    path = tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["dit_model.bogus"] = state.pop("dit_model.proj_in.weight")
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \[dit_model\.proj_in\.weight\].*unexpected key\(s\) \[dit_model\.bogus\]"):
        load_base(build_base("step1x3d", "tiny"), tmp_path)
    with pytest.raises(FileNotFoundError, match="vae/diffusion_pytorch_model.safetensors"):
        load_base(build_base("step1x3d", "tiny"), tmp_path / "nowhere")


class _NotATensor:
    pass


def test_hunyuan_release_ckpt_is_converted_without_running_pickled_code(tmp_path):
    """Hunyuan3D-2.1 ships pickled model.fp16.ckpt files (the DiT's a bundle {"model", "vae",
    "conditioner"}): load_base refuses them with the convert command; `python -m model.checkpoint
    convert` writes the safetensors layout, which loads strictly and exactly; a pickle holding
    anything but tensors is refused (weights_only)."""
    import subprocess
    import sys

    src = build_base("hunyuan3d21", "tiny")
    vae_dir, dit_dir = tmp_path / "hunyuan3d-vae-v2-1", tmp_path / "hunyuan3d-dit-v2-1"
    vae_dir.mkdir()
    dit_dir.mkdir()
    torch.save(src.vae.state_dict(), vae_dir / "model.fp16.ckpt")
    torch.save({"model": src.dit.state_dict(), "vae": {"scale": torch.ones(1)}, "conditioner": {"w": torch.zeros(2)}},
               dit_dir / "model.fp16.ckpt")
    with pytest.raises(FileNotFoundError, match="python -m model.checkpoint convert"):
        load_base(build_base("hunyuan3d21", "tiny"), tmp_path)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "model.checkpoint", "convert", str(tmp_path)], cwd=repo,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = load_base(build_base("hunyuan3d21", "tiny"), tmp_path)
    for part in ("vae", "dit"):
        ours, theirs = getattr(loaded, part).state_dict(), getattr(src, part).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert loaded.vae.cfg.z_scale_factor == src.vae.cfg.z_scale_factor  # no scale file: the release's own

    torch.save({"model": _NotATensor()}, dit_dir / "model.fp16.ckpt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        from model.checkpoint import convert

        convert(tmp_path)
