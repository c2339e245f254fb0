"""Where the trained S-T layers look: how much of a latent token's attention goes to the same token
in the other frames of its clip.

    python -m benchmarks.st_attention --model models:/shapegen4d-ablation@full \
        --tracking-uri sqlite:///mlruns.db --data out/abl400/datasets/<aligned> [--limit 8]

With aligned queries, token k of every frame stands for the same surface point. A 1D temporal
layer (`model.st.temporal_only`) attends to token k of the other frames and nothing else: the index
hands it the correspondence. A spatio-temporal layer attends over every token (latents and image
tokens) of every frame and has to find token k by what it holds. This runs the model's velocity
on held-out clips (their VAE latents noised at each --sigmas level, their own video as condition)
and, in every S-T layer, takes the attention of each latent query (token k, frame t), averaged over
heads, queries, clips and noise levels:

  same token  mass on token k of the other T-1 frames
  own frame   mass on the tokens of frame t itself
  image       mass on image tokens (any frame)

beside what uniform attention gives: (T-1)/(T P), 1/T and N/P (P = N image tokens + L latents per
frame). `same token` far above uniform = the layer has found the correspondence. CPU, about a
minute for 8 clips of the small-scale table.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from jobs import ingest
from model.st_layer import STLayer

SHARES = ("same token", "own frame", "image")


def attention_shares(layer: STLayer, h_BSD: torch.Tensor, rotate, T: int, N: int,
                     bias_HSS: torch.Tensor | None = None) -> np.ndarray:
    """[3] the shares above of one S-T layer's attention (mean over heads, latent queries, clips),
    `h_BSD` its normed input of T frames of P = S / T tokens each (N image tokens, then latents),
    `rotate` its positional rotation and `bias_HSS` its logit bias, as the layer calls its attention."""
    attn = layer.attn
    q, k, _ = attn._qkv(h_BSD, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k)
    q, k = rotate(q), rotate(k)
    B, H, S, d = q.shape
    P = S // T
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) + (0 if bias_HSS is None else bias_HSS)
    A = torch.softmax(logits, dim=-1).view(B, H, T, P, T, P)[:, :, :, N:]
    same_BHTTL = torch.diagonal(A[..., N:], dim1=3, dim2=5)  # query (t, k) -> key (t', k)
    # summed over the T-1 frames t' != t of each query, averaged over queries
    same = same_BHTTL[:, :, ~torch.eye(T, dtype=torch.bool)].mean().item() * (T - 1)
    own = torch.diagonal(A.sum(-1), dim1=2, dim2=4)  # [B, H, L, T]: mass on the query's own frame
    image = A[..., :N].sum((-1, -2))  # [B, H, T, L]
    return np.array([same, own.mean().item(), image.mean().item()])


def uniform_shares(T: int, N: int, L: int) -> np.ndarray:
    P = N + L
    return np.array([(T - 1) / (T * P), 1 / T, N / P])


def load_model(uri: str, tracking_uri: str | None):
    """(pipeline, meta) on the CPU of a registered model (models:/...), any MLflow model URI or a
    packed model folder (`components.fetch_folder` fetches it)."""
    from jobs import components, registry

    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
    folder = components.fetch_folder(uri)
    return registry.load_pipeline(next(folder.rglob(registry.META)).parent, device="cpu")


@torch.no_grad()
def measure(pipeline, clips: dict, sigmas: list[float], num_surface: int, seed: int) -> tuple[np.ndarray, tuple]:
    """([layers, 3] shares averaged over clips and sigmas, (T, N, L))."""
    model = pipeline.model
    if model.cfg.st.temporal_only:
        raise ValueError("a 1D temporal model attends only to its own token across frames: same token is 1 by construction")
    captured = []

    def capture(i):  # the layer's attention input, rotation and logit bias, as it calls them
        return lambda m, args, kwargs: captured.append((i, args[0], kwargs["rotate"], kwargs.get("bias_HLL")))

    hooks = [layer.attn.register_forward_pre_hook(capture(i), with_kwargs=True) for i, layer in enumerate(model.st_layers)]
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    total, count, dims = None, 0, None
    try:
        for clip in clips.values():
            surface = clip["surface"]
            pick = np.sort(rng.choice(surface.shape[1], size=min(num_surface, surface.shape[1]), replace=False))
            x0_TLC, _, _ = pipeline.vae.encode(torch.from_numpy(surface[:, pick]), torch.from_numpy(clip["queries"]),
                                               sample=False)
            T, L, _ = x0_TLC.shape
            cond_TNK = pipeline.conditioner(torch.from_numpy(clip["frames"]), clip_len=T)
            N = cond_TNK.shape[1] if model.cfg.st.use_image_tokens else 0
            for s in sigmas:
                x = (1 - s) * x0_TLC + s * torch.randn(x0_TLC.shape, generator=g)
                captured.clear()
                model(x[None], torch.tensor([s]), cond_TNK[None])
                shares = np.stack([attention_shares(model.st_layers[i], h, rot, T, N, b) for i, h, rot, b in captured])
                total = shares if total is None else total + shares
                count += 1
                dims = (T, N, L)
    finally:
        for h in hooks:
            h.remove()
    return total / count, dims


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models:/<name>@<alias> or a packed model folder")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--data", required=True, help="the aligned dataset the model was trained on")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--sigmas", default="0.25,0.5,0.75")
    ap.add_argument("--num-surface", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    pipeline, _ = load_model(a.model, a.tracking_uri)
    clips = ingest.read_clips(ingest.open_dataset(a.data), a.split, a.limit, ("surface", "queries", "frames"))
    shares, (T, N, L) = measure(pipeline, clips, [float(s) for s in a.sigmas.split(",")], a.num_surface, a.seed)
    uni = uniform_shares(T, N, L)
    print(f"{a.model}: {len(clips)} {a.split} clips, sigma {a.sigmas}; T={T} frames, N={N} image tokens, L={L} latents")
    print("| S-T layer | " + " | ".join(f"{s} (uniform {u:.4f})" for s, u in zip(SHARES, uni)) + " | same token / uniform |")
    print("|---|" + "---|" * (len(SHARES) + 1))
    for i, row in enumerate(shares):
        print(f"| {i} | " + " | ".join(f"{x:.4f}" for x in row) + f" | {row[0] / uni[0]:.1f}x |")


if __name__ == "__main__":
    main()
