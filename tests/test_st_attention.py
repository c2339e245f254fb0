"""The S-T attention probe of benchmarks/st_attention.py on layers whose attention is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.st_attention import attention_shares, uniform_shares
from model.st_layer import STConfig, STLayer

T, N, L, D = 4, 2, 5, 16


def _layer() -> STLayer:
    torch.manual_seed(0)
    return STLayer(STConfig(width=D, heads=1, mlp_ratio=1.0))


def _frames(latents_LD: torch.Tensor, image_ND: torch.Tensor) -> torch.Tensor:
    """[1, T*(N+L), D]: every frame the same image tokens, then the same latents (token k alike in all frames)."""
    return torch.cat([image_ND, latents_LD]).repeat(T, 1)[None]


def test_zero_queries_and_keys_attend_uniformly():
    layer = _layer()
    for lin in (layer.attn.to_q, layer.attn.to_k):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    h = torch.randn(1, T * (N + L), D)
    np.testing.assert_allclose(attention_shares(layer, h, lambda t: t, T, N), uniform_shares(T, N, L), rtol=1e-5)


def test_a_layer_matching_tokens_by_content_puts_the_other_frames_mass_on_the_same_token():
    # Token k holds the one-hot e_k in every frame; q = k = h, sharpened: each latent attends to
    # the T copies of itself alike, so T-1 of T shares fall on the same token of other frames.
    layer = _layer()
    for lin, norm in ((layer.attn.to_q, layer.attn.norm_q), (layer.attn.to_k, layer.attn.norm_k)):
        torch.nn.init.eye_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
        norm.weight.data.fill_(10.0)
    h = _frames(torch.eye(D)[:L], torch.eye(D)[L:L + N])
    shares = attention_shares(layer, h, lambda t: t, T, N)
    np.testing.assert_allclose(shares, [(T - 1) / T, 1 / T, 0.0], atol=1e-4)


def test_the_same_token_bias_moves_the_mass_onto_the_same_token_of_the_other_frames():
    torch.manual_seed(0)
    layer = STLayer(STConfig(width=D, heads=2, mlp_ratio=1.0, same_token_bias=True))
    frame_S = torch.arange(T).repeat_interleave(N + L)
    h = torch.randn(1, T * (N + L), D)
    rotate = lambda t: t  # noqa: E731
    assert torch.count_nonzero(layer._same_token_bias(frame_S, N + L, N)) == 0  # zero at init: S-T as in the paper
    layer.same_token.data.fill_(30.0)
    bias = layer._same_token_bias(frame_S, N + L, N)
    # each latent of each frame: its index in the T-1 other frames, nothing else
    assert torch.count_nonzero(bias[0]) == T * L * (T - 1) and torch.count_nonzero(bias[0, :N]) == 0
    assert attention_shares(layer, h, rotate, T, N, bias)[0] == pytest.approx(1.0, abs=1e-6)
    assert attention_shares(layer, h, rotate, T, N)[0] < 0.2


def test_a_bias_started_at_log_keys_over_same_tokens_puts_half_the_mass_there():
    # Zero q/k: every key's logit is the bias alone, so b = log((S - (T-1)) / (T-1)) gives the
    # T-1 same tokens exactly half of a query's mass: the start `same_token_init` documents.
    S, same = T * (N + L), T - 1
    init = float(np.log((S - same) / same))
    layer = STLayer(STConfig(width=D, heads=2, mlp_ratio=1.0, same_token_bias=True, same_token_init=init))
    for lin in (layer.attn.to_q, layer.attn.to_k):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    frame_S = torch.arange(T).repeat_interleave(N + L)
    bias = layer._same_token_bias(frame_S, N + L, N)
    h = torch.randn(1, S, D)
    assert attention_shares(layer, h, lambda t: t, T, N, bias)[0] == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="same_token_init without same_token_bias"):
        STLayer(STConfig(width=D, heads=2, mlp_ratio=1.0, same_token_init=init))
