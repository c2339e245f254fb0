"""ShapeGen4D on the tiny bases: zero-init equivalence, frozen base, shared noise, RoPE, the
bases' flow conventions through their adapters."""
import copy
import dataclasses

import pytest
import torch

from model import build_base
from model import flow
from model.adapter import HUNYUAN3D21, STEP1X3D
from model.fit import PerFrameBase
from model.shapegen4d import ShapeGen4D, ShapeGen4DConfig
from model.st_layer import STConfig, STLayer, rope_1d

B, T, L, C, N, K = 2, 3, 10, 8, 7, 32
BASES = ["step1x3d", "hunyuan3d21"]


def _model(base_name="step1x3d", **st) -> ShapeGen4D:
    torch.manual_seed(0)
    base = build_base(base_name, "tiny").dit
    return ShapeGen4D(base, ShapeGen4DConfig(STConfig(width=64, heads=4, **st)))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, L, C, generator=g), torch.tensor([0.1, 0.8]), torch.randn(B, T, N, K, generator=g)


def _per_frame(m: ShapeGen4D, x, sigma, cond):
    return PerFrameBase(m.base)(x, sigma, cond)


class _clip_model:
    """A plain function as a flow.ClipModel of `adapter`'s base."""

    def __init__(self, fn, adapter=STEP1X3D):
        self.fn, self.adapter = fn, adapter

    def __call__(self, x, sigma, cond):
        return self.fn(x, sigma, cond)


@pytest.mark.parametrize("base_name", BASES)
def test_at_init_the_clip_model_is_the_base_applied_per_frame(base_name):
    m = _model(base_name).eval()
    x, sigma, cond = _batch()
    torch.testing.assert_close(m(x, sigma, cond), _per_frame(m, x, sigma, cond), rtol=0, atol=1e-6)


def test_adapters_map_sigma_and_velocity_to_each_bases_convention():
    """Step1X-3D reads t = 1000 sigma and predicts eps - x0; Hunyuan3D-2.1 reads t = 1 - sigma
    (0 = noise) and predicts x0 - eps: through PerFrameBase both give the canonical eps - x0."""
    x, sigma, cond = _batch()
    for name, t_of in (("step1x3d", lambda s: 1000 * s), ("hunyuan3d21", lambda s: 1 - s)):
        torch.manual_seed(0)
        dit = build_base(name, "tiny").dit.eval()
        raw = dit(x[:, 0], t_of(sigma), cond[:, 0])
        sign = 1 if name == "step1x3d" else -1
        torch.testing.assert_close(PerFrameBase(dit)(x[:, :1], sigma, cond[:, :1])[:, 0], sign * raw)


@pytest.mark.parametrize("base_name", BASES)
def test_only_st_layers_train_and_the_base_stays_bit_identical(base_name):
    m = _model(base_name).train()
    before = copy.deepcopy(m.base.state_dict())
    assert all(not p.requires_grad for p in m.base.parameters())
    own = {id(p) for p in m.st_layers.parameters()}
    if base_name == "hunyuan3d21":  # no image stream in the base: the S-T layers start their own
        assert m.image_in is not None and m.image_in.weight.requires_grad
        own |= {id(p) for p in m.image_in.parameters()}
        assert "image_in.weight" in m.trained_weights().state_dict()
    else:
        assert m.image_in is None
        assert set(m.trained_weights().state_dict()) == set(m.st_layers.state_dict())
    assert {id(p) for p in m.trainable_parameters()} == own
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
    if m.image_in is not None:  # and gradients reached the image stream's projection
        x, t, cond = _batch()
        flow.loss(m, x, cond, flow.FlowConfig(cond_dropout=0.0), torch.Generator().manual_seed(1)).backward()
        assert m.image_in.weight.grad.abs().sum() > 0


def test_noise_is_shared_across_frames_unless_ablated():
    g = torch.Generator().manual_seed(0)
    shared = flow.noise((2, 4, 5, 3), shared=True, generator=g)
    assert all(torch.equal(shared[:, 0], shared[:, k]) for k in range(4))
    indep = flow.noise((2, 4, 5, 3), shared=False, generator=g)
    assert not torch.equal(indep[:, 0], indep[:, 1])


def test_rope_makes_the_st_layer_equivariant_to_shifting_frame_indices():
    torch.manual_seed(0)
    layer = STLayer(STConfig(width=64, heads=4, mlp_ratio=4.0))
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


@pytest.mark.parametrize("base_name", BASES)
@pytest.mark.parametrize("ablation", [{"temporal_only": True}, {"use_image_tokens": False}])
def test_ablations_keep_zero_init_equivalence_and_shapes(ablation, base_name):
    m = _model(base_name, **ablation).eval()
    assert m.image_in is None  # nothing reads image tokens in these ablations
    x, sigma, cond = _batch()
    torch.testing.assert_close(m(x, sigma, cond), _per_frame(m, x, sigma, cond), rtol=0, atol=1e-6)


def test_time_shift_spends_more_steps_at_high_noise():
    s = torch.linspace(1, 0, 11)
    shifted = flow.shift_sigma(s, 3.0)
    assert shifted[0] == 1 and shifted[-1] == 0
    assert (shifted[1:-1] > s[1:-1]).all()
    assert torch.equal(flow.shift_sigma(s, 1.0), s)


@pytest.mark.parametrize("base_name", BASES)
def test_sampler_is_deterministic_and_uses_shared_noise(base_name):
    m = _model(base_name).eval()
    _, _, cond = _batch()
    cfg = flow.FlowConfig(steps=4)
    a = flow.sample(m, cond, (B, T, L, C), cfg, torch.Generator().manual_seed(3))
    b = flow.sample(m, cond, (B, T, L, C), cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (B, T, L, C)
    # At init the S-T layers add nothing and the condition is shared: identical frames.
    same_cond = cond[:, :1].expand(B, T, N, K)
    c = flow.sample(m, same_cond, (B, T, L, C), cfg, torch.Generator().manual_seed(3))
    torch.testing.assert_close(c[:, 0], c[:, 2], rtol=0, atol=1e-5)


def test_official_loss_is_the_x0_preconditioned_one_and_uniform_is_the_plain_velocity_mse():
    """Step1X-3D's loss: the model's velocity v turned into an x0 estimate x_sigma - sigma v and
    compared with x0 (precondition_outputs), i.e. sigma^2 (v - (eps - x0))^2."""
    torch.manual_seed(0)
    x0 = torch.randn(3, 2, 5, 4)
    cond = torch.randn(3, 2, 6, 8)
    v_fixed = torch.randn(3, 2, 5, 4)
    seen = {}

    def fn(x_t, sigma, c):
        seen["x_t"], seen["sigma"] = x_t, sigma
        return v_fixed

    model = _clip_model(fn)
    cfg = flow.FlowConfig(cond_dropout=0.0)
    got = flow.loss(model, x0, cond, cfg, torch.Generator().manual_seed(4))
    sigma = seen["sigma"][:, None, None, None]
    x0_estimate = seen["x_t"] - sigma * v_fixed
    torch.testing.assert_close(got, ((x0_estimate - x0) ** 2).mean(), rtol=1e-5, atol=1e-7)
    uniform = flow.loss(model, x0, cond, flow.FlowConfig(cond_dropout=0.0, loss_weighting="uniform"),
                        torch.Generator().manual_seed(4))
    eps = (seen["x_t"] - (1 - sigma) * x0) / sigma
    torch.testing.assert_close(uniform, ((v_fixed - (eps - x0)) ** 2).mean(), rtol=1e-4, atol=1e-6)
    # Hunyuan3D-2.1's official loss is that plain velocity MSE.
    official_hy = flow.loss(_clip_model(fn, HUNYUAN3D21), x0, cond, cfg, torch.Generator().manual_seed(4))
    torch.testing.assert_close(official_hy, uniform)


def test_official_sigma_grid_and_zero_first_step():
    cfg = flow.FlowConfig(steps=5, time_shift=1.0)
    # diffusers' FlowMatchEulerDiscreteScheduler(1000 steps, shift 1): linspace(1, 1/1000, N), then 0
    torch.testing.assert_close(flow.sigma_grid(cfg, STEP1X3D), torch.tensor([1.0, 0.75025, 0.5005, 0.25075, 0.001, 0.0]))
    linear = flow.sigma_grid(flow.FlowConfig(steps=4, time_shift=1.0, sigma_grid="linear"), STEP1X3D)
    torch.testing.assert_close(linear, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    calls = []

    def fn(x, sigma, c):
        calls.append(float(sigma[0]))
        return torch.ones_like(x)

    model = _clip_model(fn)
    cond = torch.zeros(1, 2, 3, 4)
    x = flow.sample(model, cond, (1, 2, 5, 4), dataclasses.replace(cfg, guidance=1.0), torch.Generator().manual_seed(0))
    eps = flow.noise((1, 2, 5, 4), True, torch.Generator().manual_seed(0))
    # the first step (sigma 1 -> 0.75025) moves nothing; the model runs from the second step on
    assert calls[0] == pytest.approx(0.75025) and len(calls) == 4
    torch.testing.assert_close(x, eps - 0.75025)  # velocity 1 over the remaining sigma span 0.75025 -> 0


def test_hunyuan_sampler_grid_cfg_order_and_guidance_are_its_own():
    """Hunyuan3D-2.1's pipeline: t = linspace(0, 1, N) then a zero-length last step (sigma
    linspace(1, 0, N)), no zeroed first step, CFG batch [cond, uncond] at 5.0."""
    cfg = flow.FlowConfig(steps=5, time_shift=1.0)
    torch.testing.assert_close(flow.sigma_grid(cfg, HUNYUAN3D21), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    resolved = flow.resolve(cfg, HUNYUAN3D21)
    assert (resolved.guidance, resolved.zero_first_step, resolved.loss_weighting) == (5.0, False, "uniform")
    assert flow.resolve(cfg, STEP1X3D).guidance == 7.5
    assert flow.resolve(dataclasses.replace(cfg, guidance=2.0), HUNYUAN3D21).guidance == 2.0
    batches = []

    def fn(x, sigma, c):
        batches.append(c[:, 0, 0, 0].clone())
        # velocity 1 for the conditional half, 0 for the unconditional one
        return (c[:, :1, :1, :1] != 0).float().expand_as(x)

    cond = torch.ones(1, 2, 3, 4)
    x = flow.sample(_clip_model(fn, HUNYUAN3D21), cond, (1, 2, 5, 4), cfg, torch.Generator().manual_seed(0))
    assert len(batches) == 4 and all(b.tolist() == [1.0, 0.0] for b in batches)  # [cond, uncond]
    eps = flow.noise((1, 2, 5, 4), True, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, eps - 5.0)  # guided velocity 0 + 5 (1 - 0) over the whole span 1 -> 0


@pytest.mark.parametrize("base_name", BASES)
def test_same_token_bias_starts_as_the_papers_layer_and_trains(base_name):
    x, sigma, cond = _batch()
    plain, biased = _model(base_name), _model(base_name, same_token_bias=True)
    # Same seed, same weights but the bias (trained with the S-T layers, so saved with them).
    assert [k for k in biased.trained_weights().state_dict() if k not in plain.trained_weights().state_dict()] == [
        f"{i}.same_token" for i in range(len(biased.st_layers))]
    for layer in (*plain.st_layers, *biased.st_layers):  # a trained layer: its output counts
        torch.manual_seed(1)
        torch.nn.init.normal_(layer.proj_out.weight, std=0.05)
    torch.testing.assert_close(biased(x, sigma, cond), plain(x, sigma, cond), rtol=0, atol=1e-6)  # a zero bias (another kernel)
    biased(x, sigma, cond).square().mean().backward()
    assert all(layer.same_token.grad.abs().min() > 0 for layer in biased.st_layers)
    with pytest.raises(ValueError, match="same_token_bias is for S-T attention"):
        _model(base_name, same_token_bias=True, temporal_only=True)


@pytest.mark.parametrize("base_name", BASES)
def test_wider_heads_start_as_the_base_and_train_every_head_channel(base_name):
    x, sigma, cond = _batch()
    m = _model(base_name, head_dim=32).train()  # the tiny base's heads are 16 wide
    layer = m.st_layers[0]
    assert tuple(layer.attn.to_q.weight.shape) == (4 * 32, 64) and layer.attn.norm_q.weight.numel() == 32
    assert layer.proj_out.in_features == 4 * 32 + 4 * 64  # wide attention + the base's MLP ratio
    torch.testing.assert_close(m.eval()(x, sigma, cond), _per_frame(m, x, sigma, cond), rtol=0, atol=1e-6)
    for layer in m.st_layers:
        torch.nn.init.normal_(layer.proj_out.weight, std=0.05)
    m.train()(x, sigma, cond).square().mean().backward()
    for layer in m.st_layers:
        grad = layer.attn.to_q.weight.grad.view(4, 32, 64)  # every channel of every head gets gradient
        assert (grad.abs().sum(-1) > 0).all()
