"""What each Ray Train worker runs: DeepSpeed over ShapeGen4D, only the S-T layers in the optimizer.

Per micro-batch: frozen VAE encoder (surface points + the aligned queries of each frame) ->
latents x0 [b,T,L,C]; frozen DINOv2 -> condition tokens [b,T,N,K]; shared-noise flow loss.
Gradient accumulation fills `train.global_batch_size`. Every `checkpoint_every` steps each rank
saves its DeepSpeed files (frozen base excluded: it is rebuilt from its own source) plus, on rank
0, the consolidated S-T weights, and all ranks report to Ray Train, which merges them. A worker
that restarts (a re-run with the same run name, or Ray's FailureConfig) resumes from the latest
checkpoint: same S-T weights, optimizer and schedule state, step counter and MLflow run.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from jobs import components
from jobs import config as config_lib
from jobs.train_config import TrainConfig
from model import flow
from jobs.runtime import hms, lr_factor

log = logging.getLogger("shapegen4d.train")
DS_TAG = "ds"  # DeepSpeed checkpoint tag inside every Ray checkpoint folder
STATE = "trainer_state.json"
ST_WEIGHTS = "st_layers.safetensors"
FAIL_ENV = "SHAPEGEN4D_FAIL_ONCE_AT_STEP"  # fault injection for the recovery test: "<step>:<marker file>"


def accumulation_steps(cfg: TrainConfig) -> int:
    per_step = cfg.train.micro_batch_size * cfg.scaling.num_workers
    if cfg.train.global_batch_size % per_step:
        raise ValueError(f"train.global_batch_size={cfg.train.global_batch_size} is not a multiple of "
                         f"micro_batch_size x num_workers = {per_step}")
    return cfg.train.global_batch_size // per_step


def deepspeed_config(cfg: TrainConfig, use_bf16: bool) -> dict:
    return {
        "train_batch_size": cfg.train.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch_size,
        "gradient_accumulation_steps": accumulation_steps(cfg),
        "gradient_clipping": cfg.train.grad_clip,
        "zero_optimization": {"stage": cfg.deepspeed.stage},
        "bf16": {"enabled": use_bf16},
        # Our optimizer is torch AdamW over the S-T parameters (DeepSpeed's own would compile a
        # CPU Adam op); ZeRO accepts it with this flag.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # our own progress lines instead
    }


def read_state(folder: Path) -> dict:
    """{"step", "metrics"} of a checkpoint folder."""
    return json.loads((folder / STATE).read_text())


def _disable_shm_comm() -> None:
    """DeepSpeed's CPU accelerator builds a C++ shared-memory all-reduce on first init (~90 s)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _gathered(module: torch.nn.Module, stage: int, fn):
    """fn(module) with full parameters on every rank (ZeRO-3 partitions them: gather first)."""
    if stage != 3:
        return fn(module)
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return fn(module)


def _encode(batch: dict, comps: components.Components, cfg: TrainConfig, g: torch.Generator, dtype) -> tuple:
    """Batch of decoded rows -> (x0 [b,T,L,C], cond [b,T,N,K]) with the frozen encoders."""
    surface = batch["surface"]
    b, T, N, _ = surface.shape
    if cfg.data.num_surface_points and cfg.data.num_surface_points < N:
        idx = torch.randperm(N, generator=g, device=g.device)[: cfg.data.num_surface_points].to(surface.device)
        surface = surface[:, :, idx]
    flat = lambda x: None if x is None else x.flatten(0, 1)  # noqa: E731
    with torch.no_grad():
        # Posterior means (scaled): deterministic targets, the same an offline latent cache would hold.
        x0, _, _ = comps.base.vae.encode(flat(surface), flat(batch["queries"]), flat(batch.get("sharp_surface")),
                                         flat(batch.get("sharp_queries")), sample=False)
        # clip_len=T: each clip of the micro-batch is recentred by its own clip-shared box.
        cond = comps.conditioner(batch["frames"].flatten(0, 1).cpu(), clip_len=T).to(surface.device)
    return x0.view(b, T, *x0.shape[1:]).to(dtype), cond.view(b, T, *cond.shape[1:]).to(dtype)


def _fault_injection() -> tuple[int | None, Path]:
    """(step, marker) from $SHAPEGEN4D_FAIL_ONCE_AT_STEP="<step>:<marker file>": the last rank dies
    at that step unless the marker exists (it writes it first), so the fault happens once."""
    value = os.environ.get(FAIL_ENV, "")
    if not value:
        return None, Path()
    step, marker = value.split(":", 1)
    return int(step), Path(marker)


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (peak RSS)


class _MlflowMetrics:
    """Rank 0 only: metrics go to the driver's MLflow run (never a run of the worker's own)."""

    def __init__(self, uri: str, run_id: str, enabled: bool):
        self.client = None
        if enabled and run_id:
            from mlflow.tracking import MlflowClient

            self.client, self.run_id = MlflowClient(uri), run_id

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def train_func(loop_cfg: dict) -> None:
    import deepspeed  # lazily, inside the worker: a driver-level import crashes CPU-only controllers
    import ray.train
    import ray.train.torch
    from safetensors.torch import save_file

    cfg = config_lib.from_dict(TrainConfig, loop_cfg["cfg"])
    spec = components.ModelConfig.from_dict(loop_cfg["spec"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_bf16 = cfg.deepspeed.precision == "bf16" or (cfg.deepspeed.precision == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    if device.type == "cpu" and not cfg.deepspeed.cpu_shm_comm:
        _disable_shm_comm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    comps = components.build(spec, device)
    model = comps.model
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, betas=cfg.train.betas, weight_decay=cfg.train.weight_decay)
    t = cfg.train
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t.warmup_steps, t.steps, t.decay_to))
    engine, opt, _, sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                                 model_parameters=params, config=deepspeed_config(cfg, use_bf16))
    step = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            engine.load_checkpoint(d, tag=DS_TAG, load_module_strict=False)  # frozen base is not in it
            state = read_state(Path(d))
        step = state["step"]
        loaded = _gathered(engine.module.trained_weights(), cfg.deepspeed.stage, components.cpu_state_dict)
        if components.fingerprint(loaded) != state["st_fingerprint"]:
            raise RuntimeError(f"checkpoint {ckpt.path}: S-T weights after loading differ from those saved at step {step}")
        if rank == 0:
            log.info("resumed from checkpoint at step %d (%s), S-T weights verified", step, ckpt.path)
    metrics_sink = _MlflowMetrics(loop_cfg["tracking_uri"], loop_cfg["run_id"], rank == 0)
    accum = accumulation_steps(cfg)
    shard = ray.train.get_dataset_shard("train")
    fail_step, fail_marker = _fault_injection()

    t_start, step_start, t_step = time.time(), step, time.time()
    window_loss, micro = torch.zeros(2, dtype=torch.float64), 0
    engine.train()
    while step < cfg.train.steps:
        batches = 0
        for batch in shard.iter_torch_batches(batch_size=cfg.train.micro_batch_size, drop_last=True, device=device):
            batches += 1
            # One generator per (seed, rank, step, micro-step): a resumed run draws the same noise.
            g = torch.Generator(device=device).manual_seed(
                ((cfg.train.seed * 1_000_003 + step) * 4096 + micro) * 1024 + rank)
            x0, cond = _encode(batch, comps, cfg, g, dtype)
            loss = flow.loss(engine, x0, cond, spec.flow, generator=g)
            engine.backward(loss)
            engine.step()
            window_loss += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
            micro += 1
            if micro < accum:
                continue
            micro = 0
            step += 1
            if step == fail_step and rank == world - 1 and not fail_marker.exists():
                fail_marker.write_text("failed once\n")
                # Ray Train's controller collects reports every 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S):
                # give it time to register the last checkpoint, so the test knows where to resume.
                time.sleep(6.0)
                os._exit(17)  # a hard worker death, as a preempted node would give
            is_log = step % cfg.train.log_every == 0 or step == cfg.train.steps
            is_ckpt = step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps
            if is_log or is_ckpt:
                torch.distributed.all_reduce(window_loss)
                now = time.time()
                metrics = {
                    "loss": float(window_loss[0] / window_loss[1]),
                    "lr": sched.get_last_lr()[0],
                    "grad_norm": float(engine.get_global_grad_norm() or 0.0),
                    "samples_per_s": cfg.train.global_batch_size * (step - step_start) / max(now - t_start, 1e-9),
                    "step_s": now - t_step,
                    "memory_gb": _memory_gb(device),
                }
                window_loss.zero_()
                if rank == 0:
                    eta = (now - t_start) / max(step - step_start, 1) * (cfg.train.steps - step)
                    log.info("step %d/%d loss %.4f lr %.2e grad %.3f | %.2f samples/s | %.2f GiB | ETA %s",
                             step, cfg.train.steps, metrics["loss"], metrics["lr"], metrics["grad_norm"],
                             metrics["samples_per_s"], metrics["memory_gb"], hms(eta))
                    metrics_sink.log(metrics, step)
                if is_ckpt:
                    weights = _gathered(engine.module.trained_weights(), cfg.deepspeed.stage, components.cpu_state_dict)
                    state = {"step": step, "metrics": metrics, "st_fingerprint": components.fingerprint(weights)}
                    if step == cfg.train.steps:  # proof for the record that the frozen base did not move
                        state["base_fingerprint"] = _gathered(
                            engine.module.base, cfg.deepspeed.stage, lambda m: components.fingerprint(m.state_dict()))
                    with tempfile.TemporaryDirectory() as tmp:
                        engine.save_checkpoint(tmp, tag=DS_TAG, exclude_frozen_parameters=True)
                        if rank == 0:
                            save_file(weights, str(Path(tmp) / ST_WEIGHTS))
                            (Path(tmp) / STATE).write_text(json.dumps(state))
                        ray.train.report({"step": step, **metrics}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            t_step = time.time()
            if step >= cfg.train.steps:
                break
        if batches == 0:
            raise RuntimeError(f"rank {rank} got no batch of {cfg.train.micro_batch_size} clip(s) from split "
                               f"{cfg.data.split!r}: the split has too few rows for {world} workers")

