"""ShapeGen4D on the tiny base: zero-init equivalence, frozen base, shared noise, RoPE, overfit."""
import copy

import pytest
import torch

from model import build_base
from model import flow
from model.shapegen4d import ShapeGen4D, ShapeGen4DConfig
from model.st_layer import STConfig, STLayer, rope_1d

B, T, L, C, N, K = 2, 3, 10, 8, 7, 32


def _model(**st) -> ShapeGen4D:
    torch.manual_seed(0)
    base = build_base("step1x3d", "tiny").dit
    return ShapeGen4D(base, ShapeGen4DConfig(STConfig(width=64, heads=4, **st)))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, L, C, generator=g), torch.tensor([100.0, 800.0]), torch.randn(B, T, N, K, generator=g)


def test_at_init_the_clip_model_is_the_base_applied_per_frame():
    m = _model().eval()
    x, t, cond = _batch()
    per_frame = m.base(x.reshape(B * T, L, C), t.repeat_interleave(T), cond.reshape(B * T, N, K)).view(B, T, L, C)
    torch.testing.assert_close(m(x, t, cond), per_frame, rtol=0, atol=1e-6)


def test_only_st_layers_train_and_the_base_stays_bit_identical():
    m = _model().train()
    before = copy.deepcopy(m.base.state_dict())
    assert all(not p.requires_grad for p in m.base.parameters())
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in m.st_layers.parameters()}
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-2)
    x, t, cond = _batch()
    for _ in range(3):
        opt.zero_grad()
        flow.loss(m, x, cond, flow.FlowConfig(), torch.Generator().manual_seed(1)).backward()
        assert all(p.grad is None for p in m.base.parameters())
        opt.step()
    after = m.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(p.abs().sum() > 0 for p in m.st_layers[0].proj_out.parameters())  # S-T did move


def test_noise_is_shared_across_frames_unless_ablated():
    g = torch.Generator().manual_seed(0)
    shared = flow.noise((2, 4, 5, 3), shared=True, generator=g)
    assert all(torch.equal(shared[:, 0], shared[:, k]) for k in range(4))
    indep = flow.noise((2, 4, 5, 3), shared=False, generator=g)
    assert not torch.equal(indep[:, 0], indep[:, 1])


def test_rope_makes_the_st_layer_equivariant_to_shifting_frame_indices():
    torch.manual_seed(0)
    layer = STLayer(STConfig(width=64, heads=4))
    for p in layer.parameters():  # leave the zero init so the layer does something
        torch.nn.init.normal_(p, std=0.05)
    for norm in (layer.attn.norm_q, layer.attn.norm_k):  # sharp attention, so positions matter visibly
        torch.nn.init.constant_(norm.weight, 3.0)
    x, c, temb = torch.randn(1, 4, 5, 64), torch.randn(1, 4, 3, 64), torch.randn(1, 64)
    a = layer(x, c, temb, torch.arange(4))
    b = layer(x, c, temb, torch.arange(4) + 11)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-5)
    # ... but it does see frame order: different relative positions change the output.
    d = layer(x, c, temb, torch.tensor([0, 2, 1, 3]))
    assert (a[0] - d[0]).abs().max() > 1e-2
    # Rotations keep norms (pairs of channels rotate).
    q = torch.randn(1, 2, 6, 16)
    torch.testing.assert_close(rope_1d(q, torch.arange(6), 1e4).norm(dim=-1), q.norm(dim=-1))


@pytest.mark.parametrize("ablation", [{"temporal_only": True}, {"use_image_tokens": False}])
def test_ablations_keep_zero_init_equivalence_and_shapes(ablation):
    m = _model(**ablation).eval()
    x, t, cond = _batch()
    base = m.base(x.reshape(B * T, L, C), t.repeat_interleave(T), cond.reshape(B * T, N, K)).view(B, T, L, C)
    torch.testing.assert_close(m(x, t, cond), base, rtol=0, atol=1e-6)


def test_time_shift_spends_more_steps_at_high_noise():
    s = torch.linspace(1, 0, 11)
    shifted = flow.shift_sigma(s, 3.0)
    assert shifted[0] == 1 and shifted[-1] == 0
    assert (shifted[1:-1] > s[1:-1]).all()
    assert torch.equal(flow.shift_sigma(s, 1.0), s)


def test_sampler_is_deterministic_and_uses_shared_noise():
    m = _model().eval()
    _, _, cond = _batch()
    cfg = flow.FlowConfig(steps=4)
    a = flow.sample(m, cond, (B, T, L, C), cfg, torch.Generator().manual_seed(3))
    b = flow.sample(m, cond, (B, T, L, C), cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (B, T, L, C)
    # At init the S-T layers add nothing and the condition is shared: identical frames.
    same_cond = cond[:, :1].expand(B, T, N, K)
    c = flow.sample(m, same_cond, (B, T, L, C), cfg, torch.Generator().manual_seed(3))
    torch.testing.assert_close(c[:, 0], c[:, 2], rtol=0, atol=1e-5)
