"""The trained model as an MLflow pyfunc: video frames in, a mesh sequence out.

    model = mlflow.pyfunc.load_model("models:/shapegen4d@candidate")
    meshes = model.predict(frames_THWC_uint8, params={"seed": 0, "steps": 30})
    # -> T dicts: "vertices" float32 [V,3] in the object's canonical [-1,1]^3 frame, "faces" int64
    #    [F,3], "vertices_camera" float32 [V,3] registered to the video (OpenCV camera frame:
    #    [u v 1]^T ~ intrinsics @ p), "colors" uint8 [V,4] projected from the first frame,
    #    "intrinsics" [3,3] and "extrinsics" [4,4] (canonical -> camera, scale included),
    #    "silhouette_iou" of this frame's registered mesh with the video's object mask

What is logged (artifact `model/`): the S-T weights (safetensors), `shapegen4d.json` (the network
spec, sampling defaults, the base and condition references), and, only for seeded random-init
pieces (tests, demos), the base and condition weights themselves. A real base (and a condition
encoder given as a folder or URI) is referenced by a URI MLflow resolves (`models:/shapegen4d-base/3`
from jobs.pretrain_base, a run's artifacts, s3://...; a plain folder is recorded as its file://
URI) and the sha256 of each file, checked again when the model loads, so a model never silently
runs on different weights than it was trained on. Where the reference does not resolve (another
machine, a moved folder), point the model at a copy, by model config or environment:

    mlflow.pyfunc.load_model(uri, model_config={"base_uri": "s3://bucket/bases/step1x3d"})
    SHAPEGEN4D_BASE_URI=/data/step1x3d SHAPEGEN4D_CONDITION_URI=/data/dinov2 python ...
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jobs import components

REPO = Path(__file__).resolve().parents[1]
META = "shapegen4d.json"
ST_WEIGHTS = "st_layers.safetensors"
PARAMS = {"seed": ("long", 0), "steps": ("long", 0), "guidance": ("double", -1.0), "mesh_resolution": ("long", 0),
          "register": ("boolean", True), "texture": ("boolean", True)}

try:
    import mlflow.pyfunc

    _PythonModel = mlflow.pyfunc.PythonModel
except ImportError:  # model-only installs can still import the packing helpers
    _PythonModel = object


@dataclass
class RegistryConfig:
    """Where a job registers what it trains."""

    name: str = "shapegen4d"  # registered model; "" = log the model without registering it
    alias: str = "candidate"  # pointed at the new version ("" = none)


@dataclass
class SampleConfig:
    """What the registered model's predict() uses by default (overridable per call)."""

    steps: int = 30
    guidance: float | None = None  # None = the base's official CFG scale (Step1X-3D 7.5, Hunyuan3D-2.1 5.0)
    window: int = 16
    overlap: int = 4
    mesh_resolution: int = 256
    seed: int = 0


def pack(folder: Path, spec: components.ModelConfig, st_weights: Path, sample: SampleConfig, extra: dict) -> Path:
    """Lay out a model folder: weights, spec, base reference, and random-init weights if any."""
    from model.checkpoint import save_base

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(st_weights, folder / ST_WEIGHTS)
    ref = components.base_reference(spec.base)
    if ref["random_init"]:
        save_base(components.random_base(spec.base), folder / "base")
    if spec.condition.model == components.TINY_DINO:
        width = components.random_base(spec.base).dit.cfg.cross_attention_dim
        components.conditioner_for(spec.condition, width, spec.base.seed).encoder.save_pretrained(folder / "condition")
    meta = {"spec": asdict(spec), "sample": asdict(sample), "base": ref,
            "condition": components.condition_reference(spec.condition), **extra}
    (folder / META).write_text(json.dumps(meta, indent=2))
    return folder


BASE_URI_ENV, CONDITION_URI_ENV = "SHAPEGEN4D_BASE_URI", "SHAPEGEN4D_CONDITION_URI"


def _verified(what: str, ref: dict, override: str | None, env: str) -> Path:
    """The local folder of a referenced set of weights, each file's sha256 checked against the model's."""
    uri = override or os.environ.get(env) or ref.get("uri") or ref["path"]  # "path": models packed before URIs
    how = (f"point the model at a copy with model_config={{'{env.removeprefix('SHAPEGEN4D_').lower()}': ...}} "
           f"or ${env}")
    try:
        folder = components.fetch_folder(uri)
    except Exception as e:  # MLflow raises its own exception types for unreachable stores/URIs
        raise FileNotFoundError(f"the {what} weights {uri} cannot be fetched here ({type(e).__name__}: {e}); {how}") from e
    for rel, want in ref["sha256"].items():
        if not (folder / rel).is_file():
            raise FileNotFoundError(f"the {what} weights {uri} lack {rel} (or are not on this machine); {how}")
        got = components.file_sha256(folder / rel)
        if got != want:
            raise ValueError(f"{what} weights {uri}/{rel} have sha256 {got}, the model was trained on {want}")
    return folder


def load_pipeline(folder: Path, device: str | None = None, base_uri: str | None = None,
                  condition_uri: str | None = None):
    """A packed model folder -> (VideoTo4D, meta). Fetches and verifies the referenced weights;
    `base_uri` / `condition_uri` (else $SHAPEGEN4D_BASE_URI / $SHAPEGEN4D_CONDITION_URI) replace the
    recorded locations, never the recorded sha256."""
    import torch
    from safetensors.torch import load_file

    from model.checkpoint import load_strict
    from model.generate import GenerateConfig, VideoTo4D
    from model.mesh import MeshConfig

    folder = Path(folder)
    meta = json.loads((folder / META).read_text())
    spec = components.ModelConfig.from_dict(meta["spec"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ref = meta["base"]
    # A random-init base ships inside the model folder; a real one loads from its verified folder.
    base_folder = folder / "base" if ref["random_init"] else _verified("base", ref, base_uri, BASE_URI_ENV)
    base = components.base_for(dataclasses.replace(spec.base, checkpoint=str(base_folder)))
    cref = meta.get("condition")
    cond_folder = _verified("condition", cref, condition_uri, CONDITION_URI_ENV) if cref else folder / "condition"
    comps = components.build(spec, device, condition_folder=str(cond_folder) if cond_folder.is_dir() else None, base=base)
    load_strict(comps.model.trained_weights(), load_file(str(folder / ST_WEIGHTS)), str(folder / ST_WEIGHTS))
    comps.model.to(device)
    sample = SampleConfig(**meta["sample"])
    # sample.guidance None: the training spec's, itself None = the base's official scale.
    fcfg = dataclasses.replace(spec.flow, steps=sample.steps,
                               guidance=spec.flow.guidance if sample.guidance is None else sample.guidance)
    gcfg = GenerateConfig(num_latents=spec.num_latents, window=sample.window, overlap=sample.overlap, flow=fcfg,
                          mesh=MeshConfig(resolution=sample.mesh_resolution, bounds=comps.model.adapter.mesh_bounds))
    return VideoTo4D(comps.conditioner, comps.model, comps.base.vae, gcfg), meta


class ShapeGen4DModel(_PythonModel):
    def load_context(self, context) -> None:
        config = getattr(context, "model_config", None) or {}
        self.pipeline, self.meta = load_pipeline(Path(context.artifacts["model"]), base_uri=config.get("base_uri"),
                                                 condition_uri=config.get("condition_uri"))

    def predict(self, context, model_input, params: dict | None = None) -> list[dict]:
        return predict(self.pipeline, self.meta, model_input, params)


def predict(pipeline, meta: dict, frames, params: dict | None = None) -> list[dict]:
    """Video -> T meshes (module doc). `frames`: uint8 [T,H,W,3|4] (RGB gets an alpha by foreground
    masking, jobs.video_io), {"frames": array} as REST clients send it, or, called in Python, a
    video file, a folder of frames or a file's bytes. params: seed, steps, guidance,
    mesh_resolution (0/-1 = default); register (pose registration to the video's masks,
    pipelines.registration) and texture (colours from the first frame, pipelines.texturing), both
    on by default; with register off, vertices_camera is the canonical front view."""
    import dataclasses

    import torch

    from jobs import video_io
    from pipelines import registration

    if isinstance(frames, dict) and len(frames) == 1:  # {"frames": array}, as REST clients send it
        frames = next(iter(frames.values()))
    params = dict(params or {})
    do_register, do_texture = bool(params.pop("register", True)), bool(params.pop("texture", True))
    params = {k: v for k, v in params.items() if v not in (0, -1.0, None) or k == "seed"}
    if isinstance(frames, (list, tuple)):
        frames = np.asarray(frames)
    frames = video_io.read_video(frames)
    cfg = pipeline.cfg
    if "steps" in params or "guidance" in params:
        pipeline.cfg = dataclasses.replace(cfg, flow=dataclasses.replace(
            cfg.flow, steps=int(params.get("steps", cfg.flow.steps)),
            guidance=float(params["guidance"]) if "guidance" in params else cfg.flow.guidance))
    if "mesh_resolution" in params:
        pipeline.cfg = dataclasses.replace(pipeline.cfg, mesh=dataclasses.replace(cfg.mesh, resolution=int(params["mesh_resolution"])))
    try:
        device = next(pipeline.model.parameters()).device
        g = torch.Generator(device=device).manual_seed(int(params.get("seed", meta["sample"]["seed"])))
        meshes = pipeline(torch.from_numpy(np.ascontiguousarray(frames)), generator=g)
    finally:
        pipeline.cfg = cfg
    return post_process(meshes, frames, registration.RegistrationConfig(), do_register, do_texture)


def post_process(meshes: list[tuple[np.ndarray, np.ndarray]], frames_THW4: np.ndarray, cfg,
                 register: bool = True, texture: bool = True) -> list[dict]:
    """Canonical meshes -> predict's output rows: registered to the frames' masks and coloured."""
    from pipelines import registration, texturing

    meshes = [(np.asarray(v, np.float32), np.asarray(f, np.int64)) for v, f in meshes]
    masks = registration.masks_of(frames_THW4)
    reg = registration.register(meshes, masks, cfg) if register else registration.front_view(*masks.shape[1:], cfg)
    cam = [(reg.apply(v), f) for v, f in meshes]
    ious = registration.silhouette_ious(cam, masks, reg.intrinsics)
    if texture:
        colors = texturing.sequence_colors(cam, frames_THW4[0], reg.intrinsics)
    else:
        colors = [np.tile(texturing.GREY, (len(v), 1)) for v, _ in meshes]
    K, E = reg.intrinsics.astype(np.float32), reg.extrinsics().astype(np.float32)
    return [{"vertices": v, "faces": f, "vertices_camera": vc, "colors": c, "intrinsics": K, "extrinsics": E,
             "silhouette_iou": float(iou)} for (v, f), (vc, _), c, iou in zip(meshes, cam, colors, ious)]


def signature():
    """Input: uint8 frames [T,H,W,3|4]. Output: one row per frame (module doc): its mesh's
    vertices [V][3] (float32, canonical [-1,1]^3), faces [F][3] (int64), vertices_camera [V][3],
    colors [V][4] (uint8 as long), intrinsics [3][3], extrinsics [4][4], silhouette_iou."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))]),
        outputs=Schema([ColSpec(Array(Array(DataType.float)), "vertices"), ColSpec(Array(Array(DataType.long)), "faces"),
                        ColSpec(Array(Array(DataType.float)), "vertices_camera"),
                        ColSpec(Array(Array(DataType.long)), "colors"),
                        ColSpec(Array(Array(DataType.float)), "intrinsics"),
                        ColSpec(Array(Array(DataType.float)), "extrinsics"),
                        ColSpec(DataType.double, "silhouette_iou")]),
        params=ParamSchema([ParamSpec(k, tp, default) for k, (tp, default) in PARAMS.items()]),
    )


def input_example() -> tuple[np.ndarray, dict]:
    """Two 32 px RGBA frames of a grey disc, and params that keep the check cheap: MLflow runs the
    logged model on it once (load + predict) before registering, so a model that cannot serve is
    caught at registration."""
    yy, xx = np.mgrid[:32, :32]
    disc = ((yy - 16) ** 2 + (xx - 16) ** 2 < 100).astype(np.uint8) * 255
    frame = np.stack([disc // 2, disc // 2, disc // 2, disc], axis=-1)
    return np.stack([frame, frame]), {"seed": 0, "steps": 1, "mesh_resolution": 16}


def log_and_register(folder: Path, registry: RegistryConfig, tags: dict) -> dict:
    """Log the packed folder as a pyfunc in the active run; register it and point the alias at it."""
    import mlflow
    import safetensors
    import skimage
    import torch
    import transformers
    from mlflow.tracking import MlflowClient

    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}",
            f"safetensors=={safetensors.__version__}", f"scikit-image=={skimage.__version__}",
            f"mlflow=={mlflow.__version__}", "numpy", "scipy", "Pillow", "av"]
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ShapeGen4DModel(),
        artifacts={"model": str(folder)},
        # The network code travels with the model: a consumer loads exactly what was trained.
        code_paths=[str(REPO / "model"), str(REPO / "jobs")],
        signature=signature(),
        input_example=input_example(),
        pip_requirements=reqs,
        registered_model_name=registry.name or None,
    )
    out = {"model_uri": info.model_uri}
    if registry.name:
        version = str(info.registered_model_version)
        client = MlflowClient()
        for k, v in tags.items():
            client.set_model_version_tag(registry.name, version, k, str(v))
        out.update({"version": version, "registered_uri": f"models:/{registry.name}/{version}"})
        if registry.alias:
            client.set_registered_model_alias(registry.name, registry.alias, version)
            out["registered_uri"] = f"models:/{registry.name}@{registry.alias}"
    return out


# ------------------------------------------------------------------ consumers: which version, and promotion policy


class RegistryError(ValueError):
    """A model reference that does not resolve, or a model that does not load."""


@dataclass
class ModelRef:
    uri: str  # as given
    load_uri: str  # pinned: models:/name/version for registered models
    name: str = ""  # registered model name ("" = not a registered model)
    version: str = ""
    run_id: str = ""  # the run that logged it

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.name else self.uri


def resolve_model(uri: str, client) -> ModelRef:
    """models:/name@alias | models:/name/<version> | models:/name/latest -> the version; other URIs as given."""
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        return ModelRef(uri, uri)
    rest = uri[len("models:/"):].strip("/")
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, ver = rest.rsplit("/", 1)
            if ver == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise RegistryError(f"model {uri} not found: registered model {name!r} has no versions")
                mv = max(versions, key=lambda v: int(v.version))
            elif ver.isdigit():
                mv = client.get_model_version(name, ver)
            else:
                raise RegistryError(f"model {uri}: {ver!r} is neither a version number nor 'latest' "
                                      "(use models:/name@alias for aliases)")
        else:
            if rest.startswith("m-"):  # an MLflow 3 logged-model id: not a registry entry
                return ModelRef(uri, uri)
            raise RegistryError(f"model {uri}: give models:/<name>@<alias> or models:/<name>/<version>")
    except MlflowException as e:
        raise RegistryError(f"model {uri} not found in the registry at {client.tracking_uri}: {e.message}") from None
    return ModelRef(uri, f"models:/{mv.name}/{mv.version}", mv.name, str(mv.version), mv.run_id or "")


def current_champion(client, name: str, alias: str) -> ModelRef | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return ModelRef(f"models:/{name}@{alias}", f"models:/{name}/{mv.version}", name, str(mv.version), mv.run_id or "")


def load_model(ref: ModelRef):
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(ref.load_uri)
    except (MlflowException, OSError) as e:
        raise RegistryError(f"model {ref.uri} ({ref.load_uri}) could not be loaded: {e}") from None


def fmt(x: float) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def decide(candidate: float, champion: float | None, mode: str = "lower", min_delta: float = 0.0,
           metric: str = "metric") -> tuple[bool, str]:
    """Whether the candidate takes the alias, and why. Pure: no registry access.

    No champion -> promoted. Otherwise promoted only when strictly better by more than min_delta
    in `mode` ("lower" or "higher" is better); a tie, a NaN on either side, or a loss keeps the
    champion. inf is an ordinary (worst for lower, best for higher) value."""
    if mode not in ("lower", "higher"):
        raise ValueError(f"promote_mode must be 'lower' or 'higher', got {mode!r}")
    candidate = float(candidate)
    if champion is None:
        return True, f"no current champion: first evaluated version ({metric} {fmt(candidate)})"
    champion = float(champion)
    if math.isnan(candidate) or math.isnan(champion):
        return False, f"{metric} not comparable: candidate {fmt(candidate)}, champion {fmt(champion)}"
    gain = champion - candidate if mode == "lower" else candidate - champion
    won = gain > min_delta and not (math.isinf(candidate) and math.isinf(champion))
    verdict = "beats" if won else "does not beat"
    margin = f" by more than {min_delta:g}" if min_delta else ""
    return won, (f"candidate {metric} {fmt(candidate)} {verdict} champion {fmt(champion)}{margin} "
                 f"({mode} is better)")
