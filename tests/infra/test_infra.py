"""Every deployment file in infra/ parses, has the keys its consumer needs, and agrees with the package: one image name
(with pyproject's version), entrypoints that exist and whose arguments meddiff accepts, the Serve import path and its
settings, A100 worker groups, Ray's own schemas where Ray ships them."""

import re
import shlex
import tomllib
from pathlib import Path

import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
KUBERAY = INFRA / "kuberay"
IMAGE_WORKDIR = "/app"  # the Dockerfile's WORKDIR: the repository is copied there
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/meddiff/meddiff:{VERSION}"
GPU = "nvidia.com/gpu"


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path}: expected one YAML document"
    return docs[0]


def repo_path(image_path: str) -> Path:
    """A path inside the image (/app/...) as the file in this repository it was copied from."""
    assert image_path.startswith(IMAGE_WORKDIR + "/"), f"{image_path}: expected a path under {IMAGE_WORKDIR}"
    return REPO / image_path[len(IMAGE_WORKDIR) + 1 :]


def images_in(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + \
               [i for v in node.values() for i in images_in(v)]
    if isinstance(node, list):
        return [i for v in node for i in images_in(v)]
    return []


def test_every_yaml_parses_and_uses_the_one_image():
    files = sorted(INFRA.rglob("*.yaml"))
    assert {f.relative_to(INFRA).as_posix() for f in files} >= {
        "serve_config.yaml", "cluster-aws.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob-score.yaml",
        "kuberay/rayservice.yaml", "kuberay/storage.yaml"}
    for f in files:
        doc = load(f)
        for image in images_in(doc):
            assert image == IMAGE, f"{f}: image {image!r}, expected {IMAGE!r} (pyproject version {VERSION})"
    readme = (INFRA / "README.md").read_text()
    for f in files + [INFRA / "Dockerfile"]:
        assert f.name in readme, f"infra/README.md does not say when to use {f.name}"


def test_dockerfile_is_cuda_based_and_installs_the_package():
    text = (INFRA / "Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "cudnn" in base
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", text, re.M)
    assert re.search(rf"^WORKDIR {IMAGE_WORKDIR}$", text, re.M)
    for folder in ("platform", "jobs", "dashboard"):
        assert re.search(rf"^COPY {folder} \./{folder}$", text, re.M), f"the image lacks {folder}/"
    assert "python3.11" in text and "pip install --no-deps -e ." in text
    assert re.search(r'"torch==([\d.]+)"', text).group(1) == _pinned("torch")
    assert f"-t {IMAGE} ." in text
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def _pinned(name: str) -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in deps if d.startswith(f"{name}=="))


def check_cluster_spec(spec: dict, where: str) -> None:
    """A KubeRay cluster spec: Ray's version, a head group, an A100 worker group with GPUs, selector and toleration."""
    assert spec["rayVersion"] == ray.__version__, f"{where}: rayVersion {spec['rayVersion']} != ray {ray.__version__}"
    head = spec["headGroupSpec"]
    head_containers = head["template"]["spec"]["containers"]
    assert head_containers[0]["image"] == IMAGE
    if "authOptions" in spec:  # KubeRay manages the token (sets it on every container, authenticates its own calls)
        assert spec["authOptions"] == {"mode": "token", "secretName": "meddiff-ray-token"}, f"{where}: {spec['authOptions']}"
        if head["rayStartParams"]["dashboard-host"] != "127.0.0.1":  # the operator reaches it: only behind the policy
            policy = load(KUBERAY / "networkpolicy.yaml")
            labels = head["template"]["metadata"]["labels"]
            assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), f"{where}: head not covered"
            dashboard = [r for r in policy["spec"]["ingress"] if {"port": 8265, "protocol": "TCP"} in r.get("ports", [])]
            assert dashboard and all("namespaceSelector" in f for r in dashboard for f in r["from"]), \
                f"{where}: the dashboard port is open to more than the operator's namespace"
    else:
        assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1", f"{where}: the dashboard (job API) on every interface"
        for c in (head_containers[0], *[g["template"]["spec"]["containers"][0] for g in spec["workerGroupSpecs"]]):
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", f"{where}: Ray token authentication is off in {c['name']}"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "meddiff-ray-token", "key": "auth_token"}, \
                f"{where}: {c['name']} does not take the Ray token from the meddiff-ray-token Secret"
    ports = {p["containerPort"] for p in head_containers[0]["ports"]}
    assert {6379, 8265} <= ports, f"{where}: the head must expose GCS and the dashboard/job API"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert "a100" in groups, f"{where}: no a100 worker group"
    a100 = groups["a100"]
    assert 0 <= a100["minReplicas"] <= a100["replicas"] <= a100["maxReplicas"]
    pod = a100["template"]["spec"]
    assert "A100" in " ".join(str(v) for v in pod["nodeSelector"].values()), f"{where}: nodeSelector picks no A100"
    assert any(t["key"] == GPU for t in pod["tolerations"]), f"{where}: no toleration for the {GPU} taint"
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    for side in ("requests", "limits"):
        assert int(container["resources"][side][GPU]) >= 1, f"{where}: the worker asks for no GPU ({side})"
    claims = {v["persistentVolumeClaim"]["claimName"] for p in (head["template"]["spec"], pod)
              for v in p.get("volumes", []) if "persistentVolumeClaim" in v}
    assert claims == {load(KUBERAY / "storage.yaml")["metadata"]["name"]}, f"{where}: storage claim mismatch"
    for c in (head_containers[0], container):
        assert "/mnt/cluster_storage" in {m["mountPath"] for m in c["volumeMounts"]}


def test_raycluster():
    doc = load(KUBERAY / "raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    check_cluster_spec(doc["spec"], "raycluster.yaml")
    assert doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_storage_claim_is_shared():
    doc = load(KUBERAY / "storage.yaml")
    assert doc["kind"] == "PersistentVolumeClaim" and doc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_entrypoint_is_a_real_job_with_valid_arguments():
    from meddiff.cli import build_parser
    from meddiff.config import RayConfig, ScoreConfig, from_dict, load_config, parse_override

    doc = load(KUBERAY / "rayjob-score.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    check_cluster_spec(doc["spec"]["rayClusterSpec"], "rayjob-score.yaml")
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "python"
    script = repo_path(argv[1])
    assert script.is_file() and script.parent.name == "jobs", f"{argv[1]} is not one of jobs/*.py"
    assert script.name == "score.py"
    # jobs/score.py runs `meddiff score --ray <args>`: the parser must accept them and the files must exist
    args = build_parser().parse_args(["score", "--ray", *argv[2:]])
    config = repo_path(args.config)
    assert config.is_file() and config.parent == REPO / "jobs" / "configs"
    cfg = load_config(config)
    assert cfg.score.n_draws == 501 and cfg.data.image_size == 256
    assert args.checkpoint.startswith("/mnt/cluster_storage/") and args.out.startswith("/mnt/cluster_storage/")
    assert args.checkpoint.endswith(cfg.name), "the checkpoint is the run the config trains"
    raw = {"score": {}, "ray": {}}
    for text in args.set or []:
        key, value = parse_override(text)
        section, name = key.split(".")
        raw[section][name] = value
    from_dict(ScoreConfig, raw["score"], "score")
    ray_cfg = from_dict(RayConfig, raw["ray"], "ray")
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert args.actors * ray_cfg.gpus_per_actor <= workers["replicas"] * 1, "more GPU actors than worker GPUs"
    cpus = int(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert ray_cfg.cpus_per_actor < cpus, "an actor must leave CPUs for Ray Data's read and write tasks"
    assert "RAY_AUTH_MODE" in yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["env_vars"]


def _serve_apps(config: dict, where: str) -> list[dict]:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") else \
        ServeDeploySchema.parse_obj(config)
    return config["applications"]


def check_serve_app(app: dict, where: str) -> None:
    import importlib

    from meddiff.serving.app import DEPLOYMENT_NAME
    from meddiff.serving.classifier import ServeSettings

    module, attr = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module), attr)
    assert callable(builder), f"{where}: {app['import_path']} is not an application builder"
    settings = ServeSettings.from_mapping(app["args"])  # unknown keys or wrong types raise
    assert settings.checkpoint
    assert [d["name"] for d in app["deployments"]] == [DEPLOYMENT_NAME]
    assert app["route_prefix"] == "/"


def test_serve_config_is_a_valid_serve_config_for_the_package():
    config = load(INFRA / "serve_config.yaml")
    apps = _serve_apps(config, "serve_config.yaml")
    assert len(apps) == 1
    check_serve_app(apps[0], "serve_config.yaml")
    assert config["http_options"]["port"] == 8000


def test_rayservice_embeds_the_same_serve_application():
    doc = load(KUBERAY / "rayservice.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    check_cluster_spec(doc["spec"]["rayClusterConfig"], "rayservice.yaml")
    serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
    apps = _serve_apps(serve, "rayservice.yaml")
    check_serve_app(apps[0], "rayservice.yaml")
    local = load(INFRA / "serve_config.yaml")["applications"][0]
    for key in ("name", "route_prefix", "import_path"):
        assert apps[0][key] == local[key], f"rayservice.yaml and serve_config.yaml differ in {key}"
    assert set(local["args"]) - {"checkpoint"} <= set(apps[0]["args"]), "settings tuned locally but not in production"
    deployment = apps[0]["deployments"][0]
    assert deployment["ray_actor_options"]["num_gpus"] == 1
    assert deployment["autoscaling_config"]["min_replicas"] >= 1
    a100 = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert a100["maxReplicas"] >= deployment["autoscaling_config"]["max_replicas"], "replicas need a GPU each"


def test_cluster_launcher_config_passes_rays_schema_and_has_a100_workers():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(INFRA / "cluster-aws.yaml")
    validate_config(prepare_config(config))  # as `ray up` does: the provider's defaults filled in, then ray-schema.json
    assert config["provider"]["type"] in ("aws", "gcp")
    assert config["docker"]["image"] == IMAGE
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    a100 = [t for t in workers if t["node_config"].get("InstanceType", t["node_config"].get("machineType", ""))
            .startswith(("p4d.", "p4de.", "a2-"))]
    assert a100, "no A100 worker type (p4d/p4de on AWS, a2-* on GCP)"
    assert config["max_workers"] >= max(t["max_workers"] for t in a100)
    assert any("/mnt/cluster_storage" in o for o in config["docker"]["run_options"]), "no shared storage in the container"
    assert any(c.strip().startswith("ulimit -n 65536; ray start --head") for c in config["head_start_ray_commands"])


def test_ray_stays_locked_everywhere():
    """No file of infra/ turns Ray's token authentication off or binds the dashboard (whose job API runs code) to
    every interface; the launcher ships the token file and the image expects a token."""
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"RAY_AUTH_MODE\W+disabled", text), f"{path.name}: Ray token authentication disabled"
            if path.name != "rayservice.yaml":  # there behind token auth and kuberay/networkpolicy.yaml (checked above)
                assert not re.search(r"dashboard-host\W+0\.0\.0\.0", text), f"{path.name}: dashboard on 0.0.0.0"
    assert re.search(r"^\s+RAY_AUTH_MODE=token", (INFRA / "Dockerfile").read_text(), re.M)
    config = load(INFRA / "cluster-aws.yaml")
    assert "-e RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "~/.ray/auth_token" in config["file_mounts"], "the launcher does not copy the Ray token to the nodes"
    assert all("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"] if "ray start --head" in c)
    job = load(KUBERAY / "rayjob-score.yaml")
    assert job["spec"]["submissionMode"] == "SidecarMode", "a remote submitter cannot reach a dashboard on 127.0.0.1"
    assert "meddiff-ray-token" in (INFRA / "README.md").read_text(), "infra/README.md does not say how to make the Secret"
