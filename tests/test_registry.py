"""The packed model: loads what it was trained on, refuses a different base, validates its input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from jobs import components, registry
from jobs.train_config import SampleConfig
from model.checkpoint import FILES, save_base

SAMPLE = SampleConfig(steps=2, guidance=2.0, window=4, overlap=1, mesh_resolution=16)


def _spec(**kw) -> components.Spec:
    return components.Spec(size="tiny", condition_model=components.TINY_DINO, image_size=28, num_latents=12, **kw)


def _pack(tmp_path, spec: components.Spec):
    model = components.build(spec).model
    with torch.no_grad():  # trained-looking S-T weights: not the zero init
        for p in model.st_layers.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_file(components.cpu_state_dict(model.st_layers), str(tmp_path / "st.safetensors"))
    return registry.pack(tmp_path / "model", spec, tmp_path / "st.safetensors", SAMPLE, {"run_id": "r"}), model


def test_a_packed_model_reloads_its_weights_and_generates_a_sequence(tmp_path):
    folder, trained = _pack(tmp_path, _spec())
    pipeline, meta = registry.load_pipeline(folder, device="cpu")
    assert meta["base"]["random_init"] and (folder / "base" / FILES["dit"]).is_file()
    loaded = components.cpu_state_dict(pipeline.model.st_layers)
    assert components.fingerprint(loaded) == components.fingerprint(components.cpu_state_dict(trained.st_layers))
    frames = np.random.default_rng(0).integers(0, 256, (6, 20, 30, 4), dtype=np.uint8)  # 6 > window 4
    meshes = registry.predict(pipeline, meta, frames, {"seed": 3})
    assert len(meshes) == 6 and all(m["vertices"].dtype == np.float32 for m in meshes)
    again = registry.predict(pipeline, meta, {"frames": frames}, {"seed": 3, "steps": 0})  # 0 = the default
    assert all(np.array_equal(a["vertices"], b["vertices"]) for a, b in zip(meshes, again))
    with pytest.raises(ValueError, match="uint8"):
        registry.predict(pipeline, meta, frames.astype(np.float32))


def test_a_model_refuses_a_base_that_is_not_the_one_it_was_trained_on(tmp_path):
    base_dir = tmp_path / "base"
    save_base(components.random_base(_spec(base_seed=5)), base_dir)
    folder, _ = _pack(tmp_path, _spec(base_checkpoint=str(base_dir)))
    assert not (folder / "base").exists()  # referenced by path + sha256, not copied
    registry.load_pipeline(folder, device="cpu")
    save_base(components.random_base(_spec(base_seed=6)), base_dir)  # same shapes, other weights
    with pytest.raises(ValueError, match="sha256"):
        registry.load_pipeline(folder, device="cpu")
