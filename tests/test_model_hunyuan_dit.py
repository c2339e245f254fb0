"""The Hunyuan3D-2.1-compatible denoiser: hook contract, a differentiable MoE, and equality with
the official HunYuanDiTPlain (when its source is given). The release parameter layout is checked
in test_model_base."""
import dataclasses
import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from model.hunyuan_dit import MoE, HunyuanDiT, HunyuanDiTConfig

SRC_ENV = "SHAPEGEN4D_HUNYUAN3D21_SRC"
TINY = HunyuanDiTConfig(
    width=64, heads=4, depth=5, in_channels=8, cross_attention_dim=32, num_moe_layers=2, num_experts=4, moe_top_k=2
)  # head dim 16 (the official attention asserts head_dim % 8 == 0); blocks 3, 4 take skips and use MoE
B, L, N = 2, 12, 7


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(cfg=TINY, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, cfg.in_channels, generator=g)
    cond = torch.randn(B, N, cfg.cross_attention_dim, generator=g)
    return x, torch.rand(B, generator=g), cond


def _tiny(cfg=TINY) -> HunyuanDiT:
    torch.manual_seed(0)
    return HunyuanDiT(cfg)


def test_tiny_layout_skips_and_moe_blocks():
    m = _tiny()
    assert m.block_count() == 5
    assert [hasattr(b, "skip_linear") for b in m.blocks] == [False, False, False, True, True]
    assert [b.use_moe for b in m.blocks] == [False, False, False, True, True]
    assert m(*_batch()).shape == (B, L, TINY.in_channels)


def test_identity_hook_is_forward_and_a_perturbing_hook_changes_it():
    m = _tiny().eval()
    x, t, cond = _batch()
    seen = []

    def identity(i, x_BLD, c, temb_BD):
        seen.append((i, tuple(x_BLD.shape), c, tuple(temb_BD.shape)))
        return x_BLD, c

    ref = m(x, t, cond)
    torch.testing.assert_close(m.forward_blocks(x, t, cond, identity), ref, rtol=0, atol=0)
    # Latent tokens only (the time token is stripped), no image stream, the time vector [B, D].
    assert seen == [(i, (B, L, TINY.width), None, (B, TINY.width)) for i in range(TINY.depth)]
    # Not a constant shift: the LayerNorm in front of every later layer would cancel that.
    noise = 0.1 * torch.randn(B, L, TINY.width, generator=torch.Generator().manual_seed(4))
    for at in (0, 2, 4):  # a pushed (skip) block, the middle block, the last block
        nudged = m.forward_blocks(x, t, cond, lambda i, h, c, temb: (h + noise * (i == at), c))
        assert (nudged - ref).abs().max() > 1e-4


def test_hook_output_is_what_the_skip_stack_holds():
    """The value a hook returns after block 0 replaces block 0's output in the main stream AND
    on the skip stack (block 4 pops it). Checked against the blocks run by hand."""
    m = _tiny().eval()
    x, t, cond = _batch()
    delta = 0.3 * torch.randn(B, L, TINY.width, generator=torch.Generator().manual_seed(5))
    out = m.forward_blocks(x, t, cond, lambda i, h, c, temb: (h + delta if i == 0 else h, c))
    with torch.no_grad():
        h = torch.cat([m.embed_time(t)[:, None], m.x_embedder(x)], dim=1)
        raw0 = m.blocks[0](h, cond, None)
        h0 = torch.cat([raw0[:, :1], raw0[:, 1:] + delta], dim=1)
        h1 = m.blocks[1](h0, cond, None)
        h2 = m.blocks[2](h1, cond, None)
        h3 = m.blocks[3](h2, cond, h1)
        by_hand = m.final_layer(m.blocks[4](h3, cond, h0)[:, 1:])
        with_raw_skip = m.final_layer(m.blocks[4](h3, cond, raw0)[:, 1:])
    torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-6)
    assert (out - with_raw_skip).abs().max() > 1e-3  # the check can tell the two apart


def test_gradients_reach_the_input_and_flow_through_the_moe():
    m = _tiny().train()
    x, t, cond = _batch()
    x.requires_grad_(True)
    m(x, t, cond).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    moe = m.blocks[-1].moe
    # The gate only gets a gradient if the routing weights are part of the graph.
    assert moe.gate.weight.grad.abs().sum() > 0
    assert sum(e.net[0].proj.weight.grad.abs().sum() for e in moe.experts if e.net[0].proj.weight.grad is not None) > 0


def test_moe_equals_a_dense_top_k_mixture_values_and_gradients():
    torch.manual_seed(0)
    moe = MoE(16, 32, num_experts=4, top_k=2)
    x = torch.randn(3, 5, 16, requires_grad=True)
    probs = moe.gate(x).softmax(-1)
    top = probs.topk(2, dim=-1)
    keep = torch.zeros_like(probs).scatter(-1, top.indices, 1.0)
    dense = torch.stack([e(x) for e in moe.experts], dim=-2)  # [.., E, D]
    ref = ((probs * keep)[..., None] * dense).sum(-2) + moe.shared_experts(x)  # raw weights, no renormalising
    out = moe(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    g = torch.randn_like(out)
    (g_out,) = torch.autograd.grad(out, x, g, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(g_out, g_ref, rtol=0, atol=1e-6)


def _load_official():
    """HunYuanDiTPlain from $SHAPEGEN4D_HUNYUAN3D21_SRC, without running any package __init__
    (they import the whole pipeline: rembg, pymeshlab, ...). Returns (folder, stubs), stubs being
    the sys.modules entries to install; skips when the source or what it imports is missing."""
    root = os.environ.get(SRC_ENV)
    how = (f"set ${SRC_ENV} to the root of a Tencent-Hunyuan/Hunyuan3D-2.1 checkout (commit 5e3ec6d), the "
           "folder holding hy3dshape/hy3dshape/models/denoisers/hunyuandit.py")
    if not root:
        pytest.skip(f"official comparison skipped: {how}")
    folder = Path(root) / "hy3dshape" / "hy3dshape" / "models" / "denoisers"
    if not (folder / "hunyuandit.py").is_file() or not (folder / "moe_layers.py").is_file():
        pytest.skip(f"official comparison skipped: {folder} has no hunyuandit.py/moe_layers.py; {how}")
    try:
        importlib.import_module("diffusers.models.attention")  # FeedForward of the experts
        importlib.import_module("einops")
    except ImportError as e:
        pytest.skip(f"official comparison skipped: the official code needs diffusers (0.32.2) and einops ({e})")
    # A private parent package whose __path__ is the denoisers folder: `from .moe_layers import`
    # resolves inside it and denoisers/__init__.py (which imports hunyuan3ddit, flash-attn era
    # code) never runs. timm is imported by moe_layers but never used: placeholders.
    pkg = types.ModuleType("_hy3d21_denoisers")
    pkg.__path__ = [str(folder)]
    vit = types.ModuleType("timm.models.vision_transformer")
    vit.PatchEmbed = vit.Attention = vit.Mlp = type("Unused", (), {})
    stubs = {"_hy3d21_denoisers": pkg, "timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
             "timm.models.vision_transformer": vit}
    return folder, stubs


def _randomise(module: torch.nn.Module, seed: int):
    """Random weights everywhere, norms included (their defaults are an identity scale)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)


@pytest.mark.filterwarnings("ignore:.*sdp_kernel.*:FutureWarning")  # the official code's deprecated context manager
def test_equals_the_official_hunyuan_dit_plain(monkeypatch):
    folder, stubs = _load_official()
    for name, mod in stubs.items():
        monkeypatch.setitem(sys.modules, name, mod)
    try:
        official_mod = importlib.import_module("_hy3d21_denoisers.hunyuandit")
    except ImportError as e:
        pytest.skip(f"official comparison skipped: importing {folder}/hunyuandit.py failed ({e}); set ${SRC_ENV} "
                    "to a Hunyuan3D-2.1 checkout whose imports resolve here")
    moe_layers = sys.modules["_hy3d21_denoisers.moe_layers"]
    for name in ("_hy3d21_denoisers.moe_layers", "_hy3d21_denoisers.hunyuandit"):
        del sys.modules[name]  # imports are resolved; leave sys.modules as it was
    cfg = dataclasses.replace(TINY, depth=6, num_moe_layers=3)  # even depth: one pushed value is never popped
    for c in (TINY, cfg):
        # The release's kwargs (configs/hunyuandit-finetuning-...-4096.yaml), at a reduced size.
        official = official_mod.HunYuanDiTPlain(
            input_size=L, in_channels=c.in_channels, hidden_size=c.width, context_dim=c.cross_attention_dim,
            depth=c.depth, num_heads=c.heads, qk_norm=True, qk_norm_type="rms", qkv_bias=False, text_len=N,
            use_attention_pooling=False, use_pos_emb=False, with_decoupled_ca=False,
            num_moe_layers=c.num_moe_layers, num_experts=c.num_experts, moe_top_k=c.moe_top_k,
        )
        _randomise(official, seed=1)
        ours = HunyuanDiT(c)
        ours.load_state_dict(official.state_dict(), strict=True)
        official.eval()
        ours.eval()
        x, t, cond = _batch(c, seed=2)
        with torch.no_grad():
            want = official(x, t, {"main": cond})
            got = ours(x, t, cond)
        assert got.shape == want.shape == (B, L, c.in_channels)
        diff = (got - want).abs().max().item()
        print(f"depth {c.depth}: max |ours - official| = {diff:.3e} (output max {want.abs().max().item():.3f})")
        assert diff <= 1e-5
        # Train mode takes the release's other (differentiable) MoE path: same values, same input
        # gradients, once its load-balancing loss (which we leave out: the base is frozen) is
        # taken out of the backward pass (AddAuxiliaryLoss feeds d(aux)/dx into the gradient).
        monkeypatch.setattr(moe_layers.AddAuxiliaryLoss, "apply", staticmethod(lambda y, aux_loss: y))
        official.train()
        ours.train()
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        g = torch.randn(B, L, c.in_channels, generator=torch.Generator().manual_seed(3))
        want_train = official(xs[0], t, {"main": cond})
        got_train = ours(xs[1], t, cond)
        torch.testing.assert_close(got_train, want_train, rtol=0, atol=1e-5)
        (want_train * g).sum().backward()
        (got_train * g).sum().backward()
        gdiff = (xs[0].grad - xs[1].grad).abs().max().item()
        print(f"depth {c.depth}: train-mode max |grad diff| = {gdiff:.3e} (grad max {xs[0].grad.abs().max().item():.3f})")
        torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-5, atol=1e-5)
