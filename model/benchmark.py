"""Speed and memory of ShapeGen4D: `python -m model.benchmark [--base step1x3d|hunyuan3d21] [--size tiny|full|tiny,full] ...`.

Builds ShapeGen4D over `build_base(base, size).dit` (random weights: speed does not depend on
them) and times, per clip batch:
- a denoising step: one forward of the CFG pair (2B clips, no grad), exactly what
  flow.sample runs per Euler step;
- a training step: flow.loss forward + backward + AdamW step over the S-T parameters.
Prints the median seconds, the peak memory (CUDA: max_memory_allocated per phase; CPU: the
process's peak RSS, which only grows, so the training figure includes everything before it),
parameter counts and ratios. Not a test: numbers depend on the machine.

Cost note: every S-T layer attends jointly over T * (N + L) tokens (Step1X-3D at the paper's
1024 latents: 16 * 2394 = 38,304; Hunyuan3D-2.1 at its 4096: 16 * 5466 = 87,456), so it
dominates and grows quadratically in frames and tokens. `--latents 0` = the base's release count. The full model on
CPU would take hours per step: it refuses unless --allow-slow-cpu.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from model import flow
from model.base import MODULES, build_base
from model.shapegen4d import ShapeGen4D


@dataclass
class BenchConfig:
    base: str = "step1x3d"
    size: str = "tiny"
    device: str = "cpu"
    dtype: str = "fp32"  # bf16 = autocast (weights and AdamW state stay fp32)
    clips: int = 1  # B
    frames: int = 16  # T
    latents: int = 1024  # L; 0 = the base's release count (2048 / 4096)
    tokens: int = 1370  # N image tokens per frame (DINOv2-L at 518 px: CLS + 37^2)
    repeats: int = 5
    warmup: int = 1
    lr: float = 5e-5


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _median_s(fn, cfg: BenchConfig) -> float:
    for _ in range(cfg.warmup):
        fn()
    times = []
    for _ in range(cfg.repeats):
        _sync(cfg.device)
        t0 = time.perf_counter()
        fn()
        _sync(cfg.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(size: str, cfg: BenchConfig) -> dict[str, float]:
    torch.manual_seed(0)
    with torch.device(cfg.device):  # build in place: the full model is 2.2B parameters
        model = ShapeGen4D(build_base(cfg.base, size).dit)
    C, K = model.base.cfg.in_channels, model.base.cfg.cross_attention_dim
    B, T, L, N = cfg.clips, cfg.frames, cfg.latents, cfg.tokens
    x0_BTLC = torch.randn(B, T, L, C, device=cfg.device)
    cond_BTNK = torch.randn(B, T, N, K, device=cfg.device)
    device_type = torch.device(cfg.device).type

    def autocast():  # bf16: matmuls in bf16, weights and AdamW state stay fp32
        return torch.autocast(device_type, dtype=torch.bfloat16) if cfg.dtype == "bf16" else contextlib.nullcontext()

    out = {
        "base_params": sum(p.numel() for p in model.base.parameters()),
        "st_params": sum(p.numel() for p in model.trainable_parameters()),
    }

    @torch.no_grad()
    def denoise():
        with autocast():
            model(torch.cat([x0_BTLC, x0_BTLC]), torch.full((2 * B,), 0.5, device=cfg.device),
                  torch.cat([torch.zeros_like(cond_BTNK), cond_BTNK]))

    model.eval()
    _peak_reset(cfg.device)
    out["denoise_s"] = _median_s(denoise, cfg)
    out["denoise_peak_gib"] = _peak_gib(cfg.device)

    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr)
    gen = torch.Generator(cfg.device).manual_seed(0)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = flow.loss(model, x0_BTLC, cond_BTNK, flow.FlowConfig(), gen)
        loss.backward()
        opt.step()

    model.train()
    _peak_reset(cfg.device)
    out["train_s"] = _median_s(train_step, cfg)
    out["train_peak_gib"] = _peak_gib(cfg.device)
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="step1x3d", choices=["step1x3d", "hunyuan3d21"])
    p.add_argument("--size", default="tiny", help="tiny, full, or tiny,full")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    for name in ("clips", "frames", "latents", "tokens", "repeats", "warmup"):
        p.add_argument(f"--{name}", type=int, default=getattr(BenchConfig, name))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--allow-slow-cpu", action="store_true", help="run the full size on CPU anyway")
    a = p.parse_args(argv)
    sizes = a.size.split(",")
    if "full" in sizes and a.device == "cpu" and not a.allow_slow_cpu:
        p.error("--size full on CPU takes hours per step; use --device cuda or pass --allow-slow-cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = BenchConfig(**{k: v for k, v in vars(a).items() if k in BenchConfig.__dataclass_fields__ and k != "size"})
    mem = "CUDA max_memory_allocated" if a.device.startswith("cuda") else "process peak RSS"
    if not cfg.latents:
        cfg.latents = MODULES[cfg.base][1].adapter.release_latents
    print(f"ShapeGen4D benchmark: base={cfg.base} device={cfg.device} dtype={cfg.dtype} B={cfg.clips} T={cfg.frames} "
          f"L={cfg.latents} N={cfg.tokens} repeats={cfg.repeats} "
          f"threads={torch.get_num_threads()} (median; memory = {mem})")
    print(f"S-T attention length per clip: T*(N+L) = {cfg.frames * (cfg.tokens + cfg.latents)} tokens")
    results = {}
    for size in sizes:
        r = results[size] = run(size, cfg)
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()  # the next size starts from an empty pool
        print(f"[{size}] params: base {r['base_params']:,}  S-T trainable {r['st_params']:,} "
              f"({r['st_params'] / r['base_params']:.2f}x base)")
        print(f"[{size}] denoising step (CFG pair, no grad): {r['denoise_s']:.4f} s  peak {r['denoise_peak_gib']:.2f} GiB")
        print(f"[{size}] training step (fwd+bwd+AdamW, S-T): {r['train_s']:.4f} s  peak {r['train_peak_gib']:.2f} GiB")
        print(f"[{size}] ratio training/denoising: time {r['train_s'] / r['denoise_s']:.2f}x  "
              f"memory {r['train_peak_gib'] / r['denoise_peak_gib']:.2f}x")
    if len(results) == 2 and "tiny" in results and "full" in results:
        f, t = results["full"], results["tiny"]
        print(f"ratio full/tiny: params {(f['base_params'] + f['st_params']) / (t['base_params'] + t['st_params']):.0f}x  "
              f"denoising {f['denoise_s'] / t['denoise_s']:.1f}x  training {f['train_s'] / t['train_s']:.1f}x")
    sys.stdout.flush()
    return results


if __name__ == "__main__":
    main()
