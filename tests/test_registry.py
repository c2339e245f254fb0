"""The packed model: loads what it was trained on, refuses a different base, validates its input."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from jobs import components, registry
from jobs.registry import RegistryConfig, SampleConfig
from model.base import BaseConfig
from model.checkpoint import LAYOUTS, save_base
from model.condition import ConditionConfig

SAMPLE = SampleConfig(steps=2, guidance=2.0, window=4, overlap=1, mesh_resolution=16)


def _spec(checkpoint: str = "", condition: str = components.TINY_DINO) -> components.ModelConfig:
    return components.ModelConfig(base=BaseConfig(size="tiny", checkpoint=checkpoint),
                                  condition=ConditionConfig(model=condition, image_size=28), num_latents=12)


def _pack(tmp_path, spec: components.ModelConfig):
    model = components.build(spec).model
    with torch.no_grad():  # trained-looking S-T weights: not the zero init
        for p in model.st_layers.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_file(components.cpu_state_dict(model.st_layers), str(tmp_path / "st.safetensors"))
    return registry.pack(tmp_path / "model", spec, tmp_path / "st.safetensors", SAMPLE, {"run_id": "r"}), model


def test_a_packed_model_reloads_its_weights_and_generates_a_sequence(tmp_path):
    folder, trained = _pack(tmp_path, _spec())
    pipeline, meta = registry.load_pipeline(folder, device="cpu")
    assert meta["base"]["random_init"] and (folder / "base" / LAYOUTS["step1x3d"]["dit"][0]).is_file()
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
    save_base(components.random_base(BaseConfig(size="tiny", seed=5)), base_dir)
    folder, _ = _pack(tmp_path, _spec(checkpoint=str(base_dir)))
    assert not (folder / "base").exists()  # referenced by path + sha256, not copied
    registry.load_pipeline(folder, device="cpu")
    save_base(components.random_base(BaseConfig(size="tiny", seed=6)), base_dir)  # same shapes, other weights
    with pytest.raises(ValueError, match="sha256"):
        registry.load_pipeline(folder, device="cpu")


def test_a_registered_model_loads_anywhere_once_its_source_folders_are_gone(tmp_path, monkeypatch):
    """The base registered as jobs.pretrain_base does (models:/shapegen4d-base/1) and a condition
    encoder logged as run artifacts (runs:/...): the registered model records those URIs and their
    sha256, so with every folder it was built from deleted, a fresh process in another working
    directory and home loads it from the registry alone and predicts. An override that points at
    other weights is refused by their sha256; one that points nowhere says how to fix it."""
    import os
    import shutil
    import subprocess
    import sys

    import mlflow

    from jobs import pretrain_base, tracking

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.experiment("portable", uri)
    src = tmp_path / "src"
    save_base(components.random_base(BaseConfig(size="tiny", seed=5)), src / "base")
    width = components.random_base(_spec().base).dit.cfg.cross_attention_dim
    components.tiny_dino(width, 28, seed=7).save_pretrained(src / "dino")
    with mlflow.start_run(experiment_id=exp) as run:
        for sub in ("vae", "transformer"):
            mlflow.log_artifacts(str(src / "base" / sub), artifact_path=f"base/{sub}")
        mlflow.log_artifacts(str(src / "dino"), artifact_path="condition")
        base_uri = pretrain_base.register(RegistryConfig("shapegen4d-base", ""), run.info, "digest")
    assert base_uri == "models:/shapegen4d-base/1"
    spec = _spec(checkpoint=base_uri, condition=f"runs:/{run.info.run_id}/condition")
    folder, _ = _pack(tmp_path, spec)
    meta = json.loads((folder / registry.META).read_text())
    assert meta["base"]["uri"] == base_uri and meta["condition"]["uri"].startswith("runs:/")
    with mlflow.start_run(experiment_id=exp):
        registry.log_and_register(folder, RegistryConfig(), {})
    shutil.rmtree(src)
    shutil.rmtree(folder)

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "home").mkdir(parents=True)
    script = ("import mlflow, numpy as np\n"
              "m = mlflow.pyfunc.load_model('models:/shapegen4d@candidate')\n"
              "frames = np.random.default_rng(0).integers(0, 256, (4, 20, 30, 4), dtype=np.uint8)\n"
              "out = m.predict(frames, params={'seed': 1})\n"
              "print('MESHES', len(out), all(len(o['faces']) > 0 for o in out))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HOME": str(elsewhere / "home")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "MESHES 4 True" in proc.stdout, proc.stderr[-3000:]

    # Overrides: other weights are refused by their sha256, a missing copy names the fix.
    save_base(components.random_base(BaseConfig(size="tiny", seed=6)), tmp_path / "other")
    model_dir = mlflow.artifacts.download_artifacts("models:/shapegen4d@candidate")
    with pytest.raises(ValueError, match="sha256"):
        registry.load_pipeline(Path(model_dir) / "artifacts" / "model", device="cpu", base_uri=str(tmp_path / "other"))
    monkeypatch.setenv(registry.BASE_URI_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SHAPEGEN4D_BASE_URI"):
        registry.load_pipeline(Path(model_dir) / "artifacts" / "model", device="cpu")


def test_mlflow_models_serve_answers_a_request(tmp_path, monkeypatch):
    """The registered model has a signature with its output schema and a logged input example, and
    `mlflow models serve` on localhost answers a JSON request with the meshes that predict gives."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import mlflow

    from jobs import tracking

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.experiment("serve", uri)
    folder, _ = _pack(tmp_path, _spec())
    with mlflow.start_run(experiment_id=exp):
        registry.log_and_register(folder, RegistryConfig(), {})
    info = mlflow.models.get_model_info("models:/shapegen4d@candidate")
    assert [c.name for c in info.signature.outputs.inputs] == ["vertices", "faces", "vertices_camera", "colors",
                                                               "intrinsics", "extrinsics", "silhouette_iou"]
    assert info.saved_input_example_info["type"] == "ndarray"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/shapegen4d@candidate",
                               "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while server.poll() is None and time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        assert server.poll() is None, server.stderr.read()[-3000:]
        frames = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 4), dtype=np.uint8)
        body = json.dumps({"inputs": frames.tolist(), "params": {"seed": 1, "steps": 2}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(req, timeout=300).read())["predictions"]
    finally:
        server.terminate()
        server.wait(30)
    pipeline, meta = registry.load_pipeline(folder, device="cpu")
    local = registry.predict(pipeline, meta, frames, {"seed": 1, "steps": 2})
    assert len(served) == 3
    for s, m in zip(served, local):
        np.testing.assert_allclose(np.asarray(s["vertices"], np.float32), m["vertices"], atol=1e-6)
        assert np.array_equal(np.asarray(s["faces"]), m["faces"])
        np.testing.assert_allclose(np.asarray(s["vertices_camera"], np.float32), m["vertices_camera"], atol=1e-5)
        assert np.array_equal(np.asarray(s["colors"]), m["colors"])
        np.testing.assert_allclose(np.asarray(s["extrinsics"]), m["extrinsics"], atol=1e-6)


def test_a_model_packed_with_the_flat_spec_of_earlier_versions_loads_as_it_was_trained():
    """shapegen4d.json of models registered before the typed ModelConfig: a flat dict. It maps onto
    the same network, and onto the image preprocessing those models were trained with."""
    flat = {"base_name": "step1x3d", "size": "tiny", "base_checkpoint": "", "base_seed": 3,
            "condition_model": components.TINY_DINO, "image_size": 28, "use_image_tokens": False,
            "temporal_only": True, "num_latents": 12, "flow": {"time_shift": 2.0}}
    cfg = components.ModelConfig.from_dict(flat)
    assert cfg.base == BaseConfig(size="tiny", seed=3)
    assert (cfg.condition.model, cfg.condition.image_size) == (components.TINY_DINO, 28)
    assert (cfg.condition.recenter, cfg.condition.resize) == (False, "bilinear")
    assert (cfg.st.use_image_tokens, cfg.st.temporal_only, cfg.num_latents, cfg.flow.time_shift) == (False, True, 12, 2.0)
    assert components.ModelConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    with pytest.raises(ValueError, match="unknown config key"):
        components.ModelConfig.from_dict({**dataclasses.asdict(cfg), "stray": 1})
