"""Hunyuan3D-2.1's ShapeVAE: the tiny model's behaviour and equality with the official
implementation (needs a Hunyuan3D-2.1 checkout in $SHAPEGEN4D_HUNYUAN3D21_SRC). The release
parameter layout is checked with Step1X-3D's in test_model_base."""
import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.hunyuan_vae import ShapeVAE, ShapeVAEConfig

SRC_ENV = "SHAPEGEN4D_HUNYUAN3D21_SRC"
TINY = dict(width=64, heads=4, num_encoder_layers=2, num_decoder_layers=2, embed_dim=8)


def _cloud(B=2, N=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(B, N, 3, generator=g) * 2 - 1
    return torch.cat([xyz, F.normalize(xyz, dim=-1)], dim=-1)


def _flag(points, value):
    return torch.cat([points, torch.full_like(points[..., :1], value)], dim=-1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ShapeVAE(ShapeVAEConfig(**TINY)).eval()


def test_tiny_encodes_given_queries_and_decodes_an_sdf(tiny):
    surface, sharp = _cloud(), _cloud(seed=1)
    q, sq = surface[:, :6], sharp[:, :4]
    z, mean, logvar = tiny.encode(surface, q, sharp, sq, sample=False)
    assert z.shape == mean.shape == logvar.shape == (2, 10, 8)  # 6 uniform + 4 sharp latents
    torch.testing.assert_close(z, mean * tiny.cfg.z_scale_factor, rtol=0, atol=0)
    z2, mean2, _ = tiny.encode(surface, q, sharp, sq, sample=False)
    assert torch.equal(z, z2) and torch.equal(mean, mean2)

    # The 7-channel points of the release: uniform points flag 0, sharp-edge points flag 1.
    data7 = torch.cat([_flag(surface, 0.0), _flag(sharp, 1.0)], dim=1)
    queries7 = torch.cat([_flag(q, 0.0), _flag(sq, 1.0)], dim=1)
    torch.testing.assert_close(tiny.encode_points(data7, queries7, sample=False)[1], mean, rtol=0, atol=0)
    # The sharp points act through their flag: the same points given as uniform ones encode differently.
    as_uniform = tiny.encode(torch.cat([surface, sharp], 1), torch.cat([q, sq], 1), sample=False)[1]
    assert not torch.allclose(as_uniform, mean, atol=1e-4)
    # ... and so does the flag of the sharp data points alone (same queries).
    data7_unflagged = torch.cat([_flag(surface, 0.0), _flag(sharp, 0.0)], dim=1)
    assert not torch.allclose(tiny.encode_points(data7_unflagged, queries7, sample=False)[1], mean, atol=1e-4)
    # Without sharp points: only the uniform queries.
    assert tiny.encode(surface, q, sample=False)[0].shape == (2, 6, 8)

    latents = tiny.decode(z)
    assert latents.shape == (2, 10, 64)
    torch.testing.assert_close(latents, tiny.transformer(tiny.post_kl(mean)))  # decode divides the scale out
    sdf = tiny.query(torch.rand(2, 5, 3), latents)
    assert sdf.shape == (2, 5, 1)

    torch.manual_seed(1)
    zs, mean_s, logvar_s = tiny.encode(surface, q, sharp, sq)
    assert not torch.allclose(zs, z) and torch.equal(mean_s, mean)
    kl = tiny.kl(mean, logvar)
    assert kl.shape == (2,) and (kl >= 0).all()


# ---------------------------------------------------------------- equality with the official code

def _load_official(root: Path, monkeypatch):
    """The official autoencoder modules, imported without running any package __init__."""
    pkg_dir = root / "hy3dshape" / "hy3dshape"
    ae_dir = pkg_dir / "models" / "autoencoders"
    if not (ae_dir / "model.py").is_file():
        pytest.skip(f"${SRC_ENV}={root} has no hy3dshape/hy3dshape/models/autoencoders/model.py")
    top = "_hy3d21_official"
    for name, path in [(top, pkg_dir), (f"{top}.models", pkg_dir / "models"), (f"{top}.models.autoencoders", ae_dir)]:
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        monkeypatch.setitem(sys.modules, name, mod)
    utils = types.ModuleType(f"{top}.utils")  # only imported: logger, synchronize_timer, smart_load_model
    utils.logger = types.SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None)
    utils.synchronize_timer = lambda *a, **k: (lambda f: f)
    utils.smart_load_model = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, f"{top}.utils", utils)
    # Third-party imports the tested code never calls; stubbed only where missing.
    for name in ["yaml", "tqdm", "skimage"]:
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.tqdm = lambda x=None, *a, **k: x
            stub.measure = types.SimpleNamespace()
            monkeypatch.setitem(sys.modules, name, stub)
    try:
        importlib.import_module("einops")
    except ImportError:  # the blocks use rearrange('b n h d -> b h n d') only
        einops = types.ModuleType("einops")

        def rearrange(t, pattern, **_):
            assert pattern == "b n h d -> b h n d", pattern
            return t.transpose(1, 2)

        einops.rearrange, einops.repeat = rearrange, None
        monkeypatch.setitem(sys.modules, "einops", einops)
    try:
        blocks = importlib.import_module(f"{top}.models.autoencoders.attention_blocks")
        model = importlib.import_module(f"{top}.models.autoencoders.model")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"could not import the official ShapeVAE from ${SRC_ENV}={root}: {e!r}")
    return blocks, model


def _fps_standin(src, batch=None, ratio=None, random_start=True, batch_size=None, ptr=None):
    """Deterministic replacement for torch_cluster.fps: indices into src, round(ratio * n) per batch item."""
    batch = torch.zeros(src.shape[0], dtype=torch.long) if batch is None else batch
    out = []
    for b in batch.unique(sorted=True):
        idx = (batch == b).nonzero()[:, 0]
        xyz, k = src[idx, :3], int(round(float(ratio) * len(idx)))
        dist, last, picked = torch.full((len(idx),), float("inf")), 0, []
        for _ in range(k):
            picked.append(last)
            dist = torch.minimum(dist, ((xyz - xyz[last]) ** 2).sum(-1))
            last = int(dist.argmax())
        out.append(idx[torch.tensor(picked)])
    return torch.cat(out)


def test_matches_the_official_implementation(monkeypatch):
    src = os.environ.get(SRC_ENV)
    if not src or not Path(src).is_dir():
        pytest.skip(f"set ${SRC_ENV} to the root of a Hunyuan3D-2.1 checkout (with hy3dshape/hy3dshape/...)")
    blocks, official = _load_official(Path(src), monkeypatch)
    monkeypatch.setattr(blocks, "fps", _fps_standin)

    num_latents, ratio = 32, 20
    torch.manual_seed(0)
    ref = official.ShapeVAE(
        num_latents=num_latents, embed_dim=TINY["embed_dim"], width=TINY["width"], heads=TINY["heads"],
        num_decoder_layers=TINY["num_decoder_layers"], num_encoder_layers=TINY["num_encoder_layers"],
        pc_size=num_latents * ratio, pc_sharpedge_size=0, point_feats=4, downsample_ratio=ratio, num_freqs=8,
        include_pi=False, qkv_bias=False, qk_norm=True, scale_factor=ShapeVAEConfig.z_scale_factor,
    ).eval()
    with torch.no_grad():  # randomise everything, norm weights and biases included
        for name, p in ref.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    ours = ShapeVAE(ShapeVAEConfig(**TINY)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)

    # (a) Encoder: the official sampling step (seeded shuffle, stand-in FPS) gives the query and data
    # points; the embedding keeps xyz as its first 3 channels and the features after the Fourier ones.
    surface = _cloud(2, num_latents * ratio, seed=4)
    flags = (torch.rand(2, num_latents * ratio, 1, generator=torch.Generator().manual_seed(5)) < 0.3).float()
    surface7 = torch.cat([surface, flags], dim=-1)
    e = ref.fourier_embedder.out_dim
    with torch.no_grad():
        torch.manual_seed(7)
        query, data, _ = ref.encoder.sample_points_and_latents(surface7[..., :3], surface7[..., 3:])
        queries7 = torch.cat([query[..., :3], query[..., e:]], dim=-1)
        data7 = torch.cat([data[..., :3], data[..., e:]], dim=-1)
        assert queries7.shape == (2, num_latents, 7) and data7.shape == (2, num_latents * ratio, 7)
        torch.manual_seed(7)
        ref_mean = ref.encode(surface7, sample_posterior=False)
        torch.manual_seed(7)
        moments = ref.pre_kl(ref.encoder(surface7[..., :3], surface7[..., 3:])[0])
        ref_logvar = official.DiagonalGaussianDistribution(moments, feat_dim=-1).logvar
        z, mean, logvar = ours.encode_points(data7, queries7, sample=False)

        # (b) decode, (c) the SDF head
        z_ref = torch.randn(2, num_latents, TINY["embed_dim"])
        ref_latents = ref.decode(z_ref)
        latents = ours.decode(z_ref * ours.cfg.z_scale_factor)
        xyz = torch.rand(2, 100, 3) * 2.2 - 1.1
        ref_sdf = ref.geo_decoder(queries=xyz, latents=ref_latents)
        sdf = ours.query(xyz, ref_latents)

    diffs = {
        "encode mean": (mean - ref_mean).abs().max().item(),
        "encode logvar": (logvar - ref_logvar).abs().max().item(),
        "decode": (latents - ref_latents).abs().max().item(),
        "sdf": (sdf - ref_sdf).abs().max().item(),
    }
    print("max abs diff vs official Hunyuan3D-2.1 ShapeVAE (fp32):", diffs)
    assert ref_mean.shape == mean.shape and ref_latents.shape == latents.shape
    assert ref_sdf.shape == sdf.shape == (2, 100, 1)
    assert ref_mean.abs().max() > 0.1 and ref_sdf.abs().max() > 0.1  # not trivially zero
    assert max(diffs.values()) <= 1e-5, diffs
