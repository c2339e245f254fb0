"""A tiny ShapeGen4D overfits a small procedurally animated batch (CPU, about a minute).

Data: 2 clips x T=4 frames of analytic shapes, a sphere swelling while it rises and a box
stretching while it slides, with exact surface points+normals and SDF (negative inside, the
shard convention). The encoder queries are picked by FPS on frame 1 and carried to every
frame by the motion itself (each frame is c_t + h_t * u of one canonical point u), as the
data pipeline does with (face, barycentric) on real meshes.

1. The tiny VAE learns the 8 frames with model.fit.vae_loss (SDF regression + KL).
2. Latents x0 = encoder means, scaled to unit std with the VAE's own z_scale_factor; VAE frozen.
3. ShapeGen4D over the frozen tiny base DiT trains its S-T layers only (flow.loss, AdamW,
   warm-up + cosine). The base is random. A base first pretrained on these very frames (200
   steps, all parameters) already fits them per frame: fixed-draw loss 0.42 before S-T
   training, 1.02x lower after 100 S-T steps; pretrained unconditionally, 0.46 -> 0.40 (1.16x)
   in 300. What is left is mostly the floor of a per-frame model (at high noise it cannot
   tell the latents of a set apart), so 5x is out of reach there. The loss is measured on a
   fixed set of (noise, sigma) draws with the condition kept, so before/after compare like
   with like, and against the zero-velocity predictor so the ratio is not only the random
   base's output being undone.
4. flow.sample (shared noise, CFG, time shift) -> VAE decode -> marching cubes at 32^3 ->
   Chamfer distance to the analytic surfaces, against baselines that must be clearly worse.
Run with `pytest -s` to see the numbers.
"""
import dataclasses
import math
import time

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from model import build_base, flow
from model.fit import vae_loss
from model.mesh import MeshConfig, extract
from model.shapegen4d import ShapeGen4D
from model.vae import fps_queries

CLIPS, T, NS, NQ, NM, NTOK = 2, 4, 512, 32, 512, 4  # clips, frames, surface pts, latents, SDF pts, tokens
VAE_STEPS, VAE_LR = 400, 5e-3
ST_STEPS, ST_LR, WARMUP = 300, 2e-3, 20
EVAL_DRAWS = 16  # fixed (noise, sigma) draws per clip for the before/after loss
SAMPLE = flow.FlowConfig(steps=20, guidance=3.0)  # time_shift 3 (the default)
MESH = MeshConfig(resolution=32, coarse_factor=1)


# --- analytic data ---------------------------------------------------------------------------

def motion(clip: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre [3], half-extents [3]) of frame k: the surface is centre + h * u, u canonical."""
    s = k / (T - 1)
    if clip == 0:  # sphere swelling 0.35 -> 0.65 while rising
        return torch.tensor([0.0, -0.15 + 0.3 * s, 0.0]), torch.full((3,), 0.35 + 0.3 * s)
    return torch.tensor([-0.2 + 0.4 * s, 0.0, 0.1]), torch.tensor([0.3 + 0.3 * s, 0.35, 0.3 - 0.1 * s])


def canonical(clip: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points u on the unit sphere / the [-1,1]^3 box surface, and their normals."""
    if clip == 0:
        u = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
        return u, u.clone()
    u = torch.rand(n, 3, generator=g) * 2 - 1
    axis, sign = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g) * 2.0 - 1
    u[torch.arange(n), axis] = sign
    return u, torch.nn.functional.one_hot(axis, 3) * sign[:, None]


def place(clip: int, k: int, u: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    c, h = motion(clip, k)  # a positive per-axis scale keeps both shapes' normals
    return torch.cat([c + h * u, n], dim=-1)


def sdf_neg_inside(clip: int, k: int, p: torch.Tensor) -> torch.Tensor:
    c, h = motion(clip, k)
    if clip == 0:
        return (p - c).norm(dim=-1) - h[0]
    q = (p - c).abs() - h
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Frames flattened clip-major: [CLIPS*T, ...]."""
    g = torch.Generator().manual_seed(seed)
    rows = {k: [] for k in ("surface", "queries", "points", "sdf", "params", "gt")}
    for clip in range(CLIPS):
        u0, n0 = canonical(clip, NS, g)
        first = torch.cat([place(clip, 0, u0, n0), u0], dim=-1)  # carry u along to map the picks
        picked = fps_queries(first[None], NQ)[0]
        for k in range(T):
            surface = place(clip, k, *canonical(clip, NS, g))
            near = surface[: NM // 2, :3] + 0.02 * torch.randn(NM // 2, 3, generator=g)
            points = torch.cat([torch.rand(NM - NM // 2, 3, generator=g) * 2 - 1, near])
            c, h = motion(clip, k)
            rows["surface"].append(surface)
            rows["queries"].append(place(clip, k, picked[:, 6:], picked[:, 3:6]))
            rows["points"].append(points)
            rows["sdf"].append(sdf_neg_inside(clip, k, points))
            rows["params"].append(torch.cat([torch.tensor([1.0 - clip, float(clip), k / (T - 1)]), c, h]))
            rows["gt"].append(place(clip, k, *canonical(clip, 4096, g))[:, :3])  # Chamfer reference
    return {k: torch.stack(v) for k, v in rows.items()}


def condition(params_FP: torch.Tensor, K: int) -> torch.Tensor:
    """Stand-in image tokens [CLIPS, T, NTOK, K]: a fixed random projection of each frame's shape."""
    W = torch.randn(params_FP.shape[1], NTOK * K, generator=torch.Generator().manual_seed(123))
    return (params_FP @ W / math.sqrt(params_FP.shape[1])).view(CLIPS, T, NTOK, K)


# --- helpers ---------------------------------------------------------------------------------

def warmup_cosine(opt, steps: int, warmup: int):
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))


def fixed_draw_loss(model, x0_BTLC, cond_BTNK) -> float:
    """flow.loss over EVAL_DRAWS fixed (shared noise, sigma) draws per clip, condition kept."""
    with torch.no_grad():
        return flow.loss(model, x0_BTLC.repeat(EVAL_DRAWS, 1, 1, 1), cond_BTNK.repeat(EVAL_DRAWS, 1, 1, 1),
                         flow.FlowConfig(cond_dropout=0.0), torch.Generator().manual_seed(999)).item()


def meshes(vae, z_FLC):
    out = []
    with torch.no_grad():
        for z_LC in z_FLC:
            decoded = vae.decode(z_LC[None])
            out.append(extract(lambda xyz: vae.query(xyz[None], decoded)[0, :, 0], MESH))
    return out


def chamfer(mesh, gt_P3: np.ndarray) -> float:
    """Mean of both directions' mean nearest distance (unsquared), in the [-1,1] frame."""
    v, f = mesh
    if not len(f):
        return math.inf
    a = trimesh.sample.sample_surface(trimesh.Trimesh(v, f), len(gt_P3), seed=0)[0]
    return 0.5 * (cKDTree(gt_P3).query(a)[0].mean() + cKDTree(a).query(gt_P3)[0].mean())


def mean_chamfer(ms, gt_F3, order) -> float:
    return float(np.mean([chamfer(m, gt_F3[j]) for m, j in zip(ms, order)]))


# --- the run, shared by the tests --------------------------------------------------------------

@pytest.fixture(scope="module")
def run():
    # One thread: at these sizes a step is many small ops, thread hand-offs cost more than they
    # save, and on a shared 2-core machine two threads measured 10-25x slower per step.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _run()
    finally:
        torch.set_num_threads(threads)


def _run():
    t_start = time.perf_counter()
    torch.manual_seed(0)
    data = make_batch()
    base = build_base("step1x3d", "tiny")
    vae, dit = base.vae, base.dit

    # 1. VAE on the 8 frames.
    opt = torch.optim.AdamW(vae.parameters(), lr=VAE_LR, weight_decay=0.0)
    sched = warmup_cosine(opt, VAE_STEPS, WARMUP)
    for _ in range(VAE_STEPS):
        loss, vae_parts = vae_loss(vae, data["surface"], data["queries"], data["points"], data["sdf"], kl_weight=1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    vae.eval().requires_grad_(False)

    # 2. Latents: encoder means, scaled to unit std by the VAE's own factor (replace, not
    # mutate: build_base hands out the shared config object).
    with torch.no_grad():
        _, mean_FLC, _ = vae.encode(data["surface"], data["queries"], sample=False)
    vae.cfg = dataclasses.replace(vae.cfg, z_scale_factor=float(1 / mean_FLC.std()))
    x0_BTLC = (mean_FLC * vae.cfg.z_scale_factor).view(CLIPS, T, NQ, -1)
    cond_BTNK = condition(data["params"], dit.cfg.cross_attention_dim)
    t_vae = time.perf_counter() - t_start

    # 3. S-T layers only, over the frozen base.
    model = ShapeGen4D(dit)
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    untrained = ShapeGen4D(dit)  # shares the base; its S-T layers stay at their zero init
    untrained.load_state_dict(model.state_dict())
    model.eval()
    before = fixed_draw_loss(model, x0_BTLC, cond_BTNK)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=ST_LR, weight_decay=0.0)
    sched = warmup_cosine(opt, ST_STEPS, WARMUP)
    gen = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(ST_STEPS):
        loss = flow.loss(model, x0_BTLC, cond_BTNK, flow.FlowConfig(), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    after = fixed_draw_loss(model, x0_BTLC, cond_BTNK)
    zero = lambda x, sigma, c: torch.zeros_like(x)  # noqa: E731
    zero.adapter = model.adapter  # a flow.ClipModel: what the flow reads of its base
    zero_velocity = fixed_draw_loss(zero, x0_BTLC, cond_BTNK)
    t_st = time.perf_counter() - t_start - t_vae

    # 4. Sample the batch, decode, compare.
    shape = tuple(x0_BTLC.shape)
    z = flow.sample(model, cond_BTNK, shape, SAMPLE, torch.Generator().manual_seed(5)).flatten(0, 1)
    z_untrained = flow.sample(untrained, cond_BTNK, shape, SAMPLE, torch.Generator().manual_seed(5)).flatten(0, 1)
    gt = data["gt"].numpy()
    F = CLIPS * T
    same, other_clip = list(range(F)), [(i + T) % F for i in range(F)]
    reversed_time = [(i // T) * T + T - 1 - i % T for i in range(F)]
    sampled = meshes(vae, z)
    r = {
        "vae_parts": {k: float(v) for k, v in vae_parts.items()},
        "before": before, "after": after, "zero_velocity": zero_velocity,
        "chamfer": mean_chamfer(sampled, gt, same),
        "chamfer_per_frame": [round(float(chamfer(m, gt[i])), 4) for i, m in enumerate(sampled)],
        "vae_recon": mean_chamfer(meshes(vae, x0_BTLC.flatten(0, 1)), gt, same),
        "other_clip": mean_chamfer(sampled, gt, other_clip),
        "reversed_time": mean_chamfer(sampled, gt, reversed_time),
        "untrained_st": mean_chamfer(meshes(vae, z_untrained), gt, same),
        "base_unchanged": all(torch.equal(base_before[k], v) for k, v in model.base.state_dict().items()),
        "vae_field_at_sphere_centre": float(vae.query(motion(0, 0)[0][None, None], vae.decode(x0_BTLC[:1, 0]))[0, 0, 0]),
        "vae_loss_flipped": float(vae_loss(vae, data["surface"], data["queries"], data["points"], -data["sdf"], sample=False)[1]["sdf"]),
        "vae_loss_right": float(vae_loss(vae, data["surface"], data["queries"], data["points"], data["sdf"], sample=False)[1]["sdf"]),
    }
    t_total = time.perf_counter() - t_start
    print(f"\n[overfit] VAE {VAE_STEPS} steps {t_vae:.1f}s: {r['vae_parts']}; sdf MSE with the shard sign "
          f"{r['vae_loss_right']:.5f}, with it flipped {r['vae_loss_flipped']:.5f}")
    print(f"[overfit] S-T {ST_STEPS} steps {t_st:.1f}s: fixed-draw flow loss {before:.4f} -> {after:.4f} "
          f"({before / after:.2f}x; zero-velocity reference {zero_velocity:.4f})")
    print(f"[overfit] Chamfer sampled {r['chamfer']:.4f} {r['chamfer_per_frame']} | VAE reconstruction {r['vae_recon']:.4f} "
          f"| baselines: other clip {r['other_clip']:.4f}, reversed time {r['reversed_time']:.4f}, "
          f"untrained S-T {r['untrained_st']:.4f} | total {t_total:.1f}s")
    return r


def test_vae_loss_takes_the_shard_sign_and_the_field_is_positive_inside(run):
    assert run["vae_field_at_sphere_centre"] > 0  # frame 1's sphere: positive inside
    assert run["vae_loss_right"] < 0.01 < run["vae_loss_flipped"]
    assert run["vae_parts"]["sdf"] < 2e-3


def test_st_layers_alone_cut_the_flow_loss_5x_with_the_base_frozen(run):
    assert run["base_unchanged"]
    assert run["before"] / run["after"] >= 5.0, (run["before"], run["after"])
    assert run["after"] < 0.3 * run["zero_velocity"]  # not just undoing the random base's output


def test_sampled_meshes_of_the_batch_match_the_analytic_surfaces(run):
    assert run["chamfer"] < 0.06
    assert run["chamfer"] < 1.5 * run["vae_recon"] + 0.01  # close to what the VAE itself can give
    for baseline in ("other_clip", "reversed_time", "untrained_st"):
        assert run["chamfer"] < 0.5 * run[baseline], (baseline, run[baseline])


def test_benchmark_smoke_prints_every_field(capsys):
    from model import benchmark

    threads = torch.get_num_threads()
    try:
        out = benchmark.main(["--frames", "2", "--latents", "8", "--tokens", "4", "--repeats", "1", "--warmup", "0", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    r = out["tiny"]
    tiny = ShapeGen4D(build_base("step1x3d", "tiny").dit)
    assert r["base_params"] == sum(p.numel() for p in tiny.base.parameters())
    assert r["st_params"] == sum(p.numel() for p in tiny.st_layers.parameters())
    assert r["denoise_s"] > 0 and r["train_s"] > 0 and r["train_peak_gib"] > 0
    text = capsys.readouterr().out
    for field in ("params: base", "denoising step", "training step", "ratio training/denoising", "T*(N+L) = 24"):
        assert field in text, text
    with pytest.raises(SystemExit):  # the full model never starts on CPU by accident
        benchmark.main(["--size", "full"])
