"""Training losses of the single-frame 3D prior: the VAE's SDF regression + KL, and the base
DiT's flow loss on single shapes. Reused by the pretraining job and the overfit tests.

Sign convention: the shards (and the dataset's manifest) store the SDF NEGATIVE INSIDE; the
VAE's decoded field is POSITIVE INSIDE (Step1X-3D's convention, which mesh.extract and the
release weights assume). `vae_loss` takes the shard convention and flips it in one place, so
callers pass shard columns as they are. Shapes: B shapes, N surface points, L queries
(latents), M supervision points, C latent channels, K condition width.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def vae_loss(
    vae: nn.Module,  # a base's VAE (model.vae.VecSetVAE, model.hunyuan_vae.ShapeVAE)
    surface_BN6: torch.Tensor,
    queries_BL6: torch.Tensor,
    points_BM3: torch.Tensor,
    sdf_neg_inside_BM: torch.Tensor,
    kl_weight: float = 1e-3,
    sample: bool = True,
    sharp_surface_BN6: torch.Tensor | None = None,
    sharp_queries_BL6: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Encode -> decode -> SDF at `points`; MSE against the NEGATED shard SDF, plus kl_weight * KL.

    `sdf_neg_inside_BM`: signed distance as the shards store it (negative inside). Returns
    (loss, {"sdf": mse, "kl": kl, "sign_acc": fraction of points on the right side}).
    """
    z_BLC, mean_BLC, logvar_BLC = vae.encode(surface_BN6, queries_BL6, sharp_surface_BN6, sharp_queries_BL6, sample=sample)
    pred_BM = vae.query(points_BM3, vae.decode(z_BLC))[..., 0]
    target_BM = -sdf_neg_inside_BM.to(pred_BM.dtype)  # shard convention -> the VAE's (positive inside)
    sdf = F.mse_loss(pred_BM.float(), target_BM.float())
    kl = vae.kl(mean_BLC.float(), logvar_BLC.float()).mean()
    with torch.no_grad():
        sign_acc = ((pred_BM > 0) == (target_BM > 0)).float().mean()
    return sdf + kl_weight * kl, {"sdf": sdf.detach(), "kl": kl.detach(), "sign_acc": sign_acc}


class PerFrameBase:
    """The base DiT as a flow.ClipModel (canonical sigma in, canonical velocity out), every frame
    on its own, through its base's adapter.

    Pretraining the 3D prior is then `flow.loss(PerFrameBase(dit), x0_B1LC, cond_B1NK, cfg)`
    with T = 1 clips (one shape each): no code of its own to drift from the 4D loss.
    """

    def __init__(self, dit: nn.Module):
        self.dit, self.adapter = dit, dit.adapter

    def __call__(self, x_BTLC: torch.Tensor, sigma_B: torch.Tensor, cond_BTNK: torch.Tensor) -> torch.Tensor:
        B, T, L, C = x_BTLC.shape
        t = self.adapter.model_time(sigma_B).repeat_interleave(T)
        out = self.dit(x_BTLC.reshape(B * T, L, C), t, cond_BTNK.flatten(0, 1))
        return self.adapter.velocity(out).view(B, T, L, C)
