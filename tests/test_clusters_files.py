"""Every file in clusters/ is checked: the launcher configs with Ray's own
validation, the KubeRay manifests against the KubeRay CRD field names and the
rules the operator and Kubernetes enforce, and the runtime_env with Ray's own
parsing and packaging code."""

from __future__ import annotations

import copy
import re
import shlex
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHER = {"aws": CLUSTERS / "aws.yaml", "gcp": CLUSTERS / "gcp.yaml"}
RAYCLUSTER = CLUSTERS / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTERS / "kuberay" / "rayjob.yaml"
RUNTIME_ENV = CLUSTERS / "runtime_env.yaml"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_every_cluster_file_is_checked():
    checked = {*LAUNCHER.values(), RAYCLUSTER, RAYJOB, RUNTIME_ENV, CLUSTERS / "README.md"}
    present = {p for p in CLUSTERS.rglob("*") if p.is_file()}
    assert present == checked, f"unchecked files in clusters/: {sorted(map(str, present - checked))}"


# --------------------------------------------------------------------------- runtime_env


def test_runtime_env_is_accepted_by_ray():
    env = load(RUNTIME_ENV)
    parsed = RuntimeEnv(**env)  # Ray's own validation of every field
    assert parsed["working_dir"] == "."
    assert parsed.env_vars() and all(isinstance(v, str) for v in parsed.env_vars().values())
    # Nothing is installed per job: the nodes have fieldkd (clusters/README.md).
    assert not {"pip", "uv", "conda", "container", "image_uri"} & set(env)
    # The file comments out the tracking URI; it must not point every job at a dead placeholder.
    assert "MLFLOW_TRACKING_URI" not in parsed.env_vars()


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.mark.parametrize("include_gitignore", [False, True])
def test_runtime_env_excludes_with_rays_packaging(tmp_path, include_gitignore):
    """Zip a checkout-like tree with Ray's own packaging code (what `ray job submit
    --working-dir` uploads) and look at what went in."""
    from ray._private.runtime_env.packaging import create_package

    shipped = ["fieldkd/__init__.py", "fieldkd/conf/config.yaml", "clusters/runtime_env.yaml", "setup.cfg",
               "constraints.txt", "benchmarks/results/fields.json", "benchmarks/fields.py", "tests/conftest.py"]
    left_out = ["outputs/abc/baseline/last.pt", "mlruns/0/meta.yaml", "mlartifacts/1/abc/renders/0.png",
                "mlflow.db", ".git/HEAD", ".git/objects/ab/cdef", "benchmarks/results/panels/fig.png",
                ".fieldkd_cache/scenes/default/r_0.png", "fieldkd/__pycache__/cli.cpython-311.pyc",
                "fieldkd.egg-info/PKG-INFO", "teacher.ckpt", "store/rays.parquet"]
    repo = tmp_path / "repo"
    _tree(repo, shipped + left_out)
    if include_gitignore:
        (repo / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    env = load(RUNTIME_ENV)
    package = tmp_path / "pkg.zip"
    create_package(str(repo), package, excludes=env["excludes"], include_gitignore=include_gitignore)
    names = {n for n in zipfile.ZipFile(package).namelist() if not n.endswith("/")}
    assert set(shipped) <= names, sorted(set(shipped) - names)
    assert not set(left_out) & names, sorted(set(left_out) & names)


# --------------------------------------------------------------------------- cluster launcher


@pytest.fixture(params=sorted(LAUNCHER))
def launcher(request):
    raw = load(LAUNCHER[request.param])
    return request.param, raw, prepare_config(copy.deepcopy(raw))


def test_launcher_config_passes_rays_validation(launcher):
    provider, raw, prepared = launcher
    validate_config(prepared)  # the JSON schema ray/autoscaler/ray-schema.json plus Ray's own rules
    assert raw["provider"]["type"] == provider
    # Our values survive the merge with Ray's defaults for the provider.
    assert prepared["setup_commands"][: len(raw["setup_commands"])] == raw["setup_commands"]
    assert prepared["available_node_types"].keys() == raw["available_node_types"].keys()


def test_launcher_has_cpu_head_and_gpu_workers(launcher):
    _, _raw, prepared = launcher
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU", 0) >= 1, "the head runs the job drivers"
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    for t in gpu.values():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= prepared["max_workers"]
        assert t["max_workers"] >= 1
        # One training asks for (largest node's CPUs, 1 GPU): a GPU worker must offer as many CPUs.
        assert t["resources"]["CPU"] >= head["resources"]["CPU"]
    assert sum(t.get("min_workers", 0) for t in workers.values()) <= prepared["max_workers"]


def test_launcher_installs_the_checkout(launcher):
    _, raw, _ = launcher
    mounts = raw["file_mounts"]
    remote = [r for r, local in mounts.items() if local == "."]
    assert len(remote) == 1, "the checkout must be synced to the nodes"
    install = f"cd {remote[0]} && pip install -c constraints.txt -e ."
    assert install in raw["setup_commands"]
    assert (ROOT / "constraints.txt").is_file() and (ROOT / "setup.cfg").is_file()
    assert ".gitignore" in raw["rsync_filter"]
    assert any(".git" in pattern for pattern in raw["rsync_exclude"])


def test_launcher_token_auth_and_start_commands(launcher):
    _, raw, _ = launcher
    # The local token goes to every node, and every node runs in token mode.
    assert raw["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    head = " ".join(raw["head_start_ray_commands"])
    worker = " ".join(raw["worker_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    for commands in (head, worker):
        assert "export RAY_AUTH_MODE=token;" in commands
        assert commands.index("RAY_AUTH_MODE=token") < commands.index("ray start")


def test_launcher_images_match_installed_ray(launcher):
    """Client and cluster must run the same Ray: the images follow the installed version."""
    _, raw, _ = launcher
    docker = raw["docker"]
    for key in ("head_image", "worker_image"):
        assert docker[key].startswith(f"rayproject/ray:{ray.__version__}-"), docker[key]
    assert docker["worker_image"].endswith("-gpu") and docker["head_image"].endswith("-cpu")


def test_rays_validation_rejects_broken_configs():
    """The launcher checks above can fail: Ray's validation catches typos and missing parts."""
    raw = load(LAUNCHER["aws"])
    typo = copy.deepcopy(raw)
    typo["max_worker"] = typo.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(typo))
    no_resources = copy.deepcopy(raw)
    del no_resources["available_node_types"]["worker_gpu"]["resources"]
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(no_resources))
    wrong_head = copy.deepcopy(raw)
    wrong_head["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        validate_config(prepare_config(wrong_head))


# --------------------------------------------------------------------------- KubeRay

# Field names of the ray.io/v1 CRDs (KubeRay v1.5.1, the first release with authOptions).
# The API server drops unknown fields silently, so a typo would go unnoticed.
RAYCLUSTER_SPEC_FIELDS = {"authOptions", "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
                          "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
                          "workerGroupSpecs"}
HEAD_GROUP_FIELDS = {"template", "headService", "enableIngress", "resources", "labels", "rayStartParams",
                     "serviceType"}
WORKER_GROUP_FIELDS = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                       "resources", "labels", "rayStartParams", "template", "scaleStrategy", "numOfHosts"}
AUTOSCALER_FIELDS = {"resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
                     "upscalingMode", "version", "env", "envFrom", "volumeMounts"}
RAYJOB_SPEC_FIELDS = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
                      "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
                      "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
                      "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
                      "shutdownAfterJobFinishes", "suspend"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
GPU = "nvidia.com/gpu"


def pod_spec(group: dict) -> dict:
    return group["template"]["spec"]


def check_pod(group: dict) -> dict:
    """Kubernetes rules for the Ray container of a group's pod template; returns it."""
    spec = pod_spec(group)
    containers = spec["containers"]
    assert containers, "a pod needs containers"
    ray_container = containers[0]  # KubeRay runs Ray in the first container
    for c in containers:
        assert DNS_LABEL.match(c["name"]), c["name"]
        assert isinstance(c.get("image"), str) and c["image"].strip(), f"{c['name']}: no image"
        resources = c.get("resources", {})
        for kind in ("limits", "requests"):
            for key, value in resources.get(kind, {}).items():
                assert QUANTITY.match(str(value)), f"{c['name']} {kind}.{key}={value!r}"
        # Extended resources such as GPUs cannot be overcommitted: requests must equal limits.
        if GPU in resources.get("requests", {}):
            assert resources["requests"][GPU] == resources["limits"][GPU]
        for env in c.get("env", []):
            assert ("value" in env) != ("valueFrom" in env), env
            assert isinstance(env.get("value", ""), str), f"env {env['name']} must be a string"
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for c in containers:
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes, f"volumeMount {mount['name']} has no volume"
    return ray_container


def gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get(GPU, 0))


def mount_paths(container: dict) -> list[str]:
    return [m["mountPath"] for m in container.get("volumeMounts", [])]


def check_cluster_spec(spec: dict) -> dict[str, dict]:
    """A RayClusterSpec (standalone or inside a RayJob); returns the Ray containers by group."""
    assert set(spec) <= RAYCLUSTER_SPEC_FIELDS, set(spec) - RAYCLUSTER_SPEC_FIELDS
    assert spec["rayVersion"] == ray.__version__, "the cluster must run the Ray version of the clients"
    assert spec["authOptions"] == {"mode": "token"}
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_FIELDS

    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_FIELDS, set(head) - HEAD_GROUP_FIELDS
    params = head["rayStartParams"]
    assert isinstance(params, dict) and all(isinstance(v, str) for v in params.values())
    head_container = check_pod(head)
    ports = {p["containerPort"] for p in head_container["ports"]}
    assert {6379, 8265, 10001} <= ports
    assert gpus(head_container) == 0, "the head is a CPU node"
    containers = {"head": head_container}

    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert set(group) <= WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
        assert DNS_LABEL.match(group["groupName"])
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        low, n, high = group["minReplicas"], group.get("replicas", group["minReplicas"]), group["maxReplicas"]
        assert all(isinstance(v, int) for v in (low, n, high))
        assert 0 <= low <= n <= high and high >= 1
        containers[group["groupName"]] = check_pod(group)
    assert any(gpus(c) >= 1 for name, c in containers.items() if name != "head"), "no GPU worker group"
    images = {c["image"] for c in containers.values()}
    assert len(images) == 1, f"head and workers must run the same image: {images}"
    # One training asks for (largest node's CPUs, 1 GPU): GPU pods must offer as many CPUs as the head.
    head_cpu = float(head_container["resources"]["limits"]["cpu"])
    for name, c in containers.items():
        if name != "head" and gpus(c):
            assert float(c["resources"]["limits"]["cpu"]) >= head_cpu
    # The shared volume is mounted at the same place in every pod.
    shared = [set(mount_paths(c)) - {"/dev/shm"} for c in containers.values()]
    assert shared[0] and all(s == shared[0] for s in shared)
    return containers


def check_manifest_header(doc: dict, kind: str) -> None:
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == kind
    assert DNS_LABEL.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63


def on_mount(path: str, container: dict) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mount_paths(container))


def test_raycluster_manifest():
    doc = load(RAYCLUSTER)
    check_manifest_header(doc, "RayCluster")
    containers = check_cluster_spec(doc["spec"])
    for name, c in containers.items():
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")), name
        assert on_mount(env["FIELDKD_CACHE"], c), f"{name}: FIELDKD_CACHE is not on the shared volume"


def compose(overrides: list[str]) -> dict:
    from fieldkd.platform.cli import compose_config

    return compose_config(overrides)


def test_rayjob_manifest():
    doc = load(RAYJOB)
    check_manifest_header(doc, "RayJob")
    spec = doc["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, set(spec) - RAYJOB_SPEC_FIELDS
    containers = check_cluster_spec(spec["rayClusterSpec"])

    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["fieldkd", "run", "method=baseline"]
    # The overrides are real keys of fieldkd's config, and the values are what a GPU cluster needs.
    cfg = compose(argv[2:])
    assert cfg["method"]["name"] in {ep.name for ep in entry_points(group="fieldkd.methods")}
    assert cfg["compute"]["gpus_per_training"] == 1
    assert cfg["device"] == "auto", "the driver runs on the CPU head; trainings resolve the device"
    for name, c in containers.items():
        assert Path(cfg["output_dir"]).is_absolute() and on_mount(cfg["output_dir"], c), \
            f"{name}: output_dir is not on the shared volume"

    env = yaml.safe_load(spec["runtimeEnvYAML"])
    parsed = RuntimeEnv(**env)
    assert "://" in parsed.get("working_dir", "://"), "a RayJob cannot upload a local working_dir"
    variables = parsed.env_vars()
    assert variables["MLFLOW_TRACKING_URI"].startswith(("http://", "https://"))
    assert all(on_mount(variables["FIELDKD_CACHE"], c) for c in containers.values())

    assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode", "SidecarMode"}
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 0


def test_kuberay_checks_can_fail():
    """The structural checks reject the mistakes they are there for."""
    spec = load(RAYCLUSTER)["spec"]
    no_gpu = copy.deepcopy(spec)
    for group in no_gpu["workerGroupSpecs"]:
        for c in pod_spec(group)["containers"]:
            for kind in ("limits", "requests"):
                c["resources"][kind].pop(GPU, None)
    with pytest.raises(AssertionError, match="no GPU worker group"):
        check_cluster_spec(no_gpu)
    typo = copy.deepcopy(spec)
    typo["workerGroupSpecs"][0]["maxReplica"] = typo["workerGroupSpecs"][0].pop("maxReplicas")
    with pytest.raises(AssertionError):
        check_cluster_spec(typo)
    bad_replicas = copy.deepcopy(spec)
    bad_replicas["workerGroupSpecs"][0]["minReplicas"] = 5
    with pytest.raises(AssertionError):
        check_cluster_spec(bad_replicas)
    no_image = copy.deepcopy(spec)
    del pod_spec(no_image["headGroupSpec"])["containers"][0]["image"]
    with pytest.raises(AssertionError, match="no image"):
        check_cluster_spec(no_image)


# --------------------------------------------------------------------------- shared storage, tracking server

WORLD_WRITABLE_CHMOD = re.compile(r"chmod\s+(?:-\w+\s+)*(?:0?[0-7]?[0-7][0-7][2367]\b|[ugo]*a[ugo]*[+=]\S*w"
                                  r"|[ug]*o[ug]*[+=]\S*w|[+=]\S*w)")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def shell_commands(text: str) -> list[str]:
    """Lines of the files as commands: continuation lines joined, YAML list dashes and comments kept."""
    return [" ".join(line.split()) for line in text.replace("\\\n", " ").splitlines()]


def world_writable(text: str) -> list[str]:
    return [c for c in shell_commands(text) if WORLD_WRITABLE_CHMOD.search(c)]


def open_mlflow_servers(text: str) -> list[str]:
    """``mlflow server`` commands that listen beyond loopback without logging users in."""
    found = []
    for command in shell_commands(text):
        if "mlflow server" not in command:
            continue
        host = re.search(r"(?:--host|-h)[ =](\S+)", command)
        if host and host.group(1).strip("'\"") not in LOOPBACK and "--app-name basic-auth" not in command:
            found.append(command)
    return found


def cluster_texts() -> dict[Path, str]:
    return {p: p.read_text() for p in CLUSTERS.rglob("*") if p.is_file()}


def test_shared_folders_are_never_world_writable():
    for path, text in cluster_texts().items():
        assert not world_writable(text), f"{path.name}: {world_writable(text)}"
    for raw in LAUNCHER.values():
        init = " ".join(load(raw)["initialization_commands"])
        assert "chmod 2775 /mnt/fieldkd" in init and "chown" in init, "group permissions for the shared folder"


def test_no_mlflow_server_listens_without_authentication():
    servers = 0
    for path, text in cluster_texts().items():
        assert not open_mlflow_servers(text), f"{path.name}: {open_mlflow_servers(text)}"
        servers += sum("mlflow server" in c for c in shell_commands(text))
    assert servers >= 1  # the README shows how to run one


def test_kuberay_pods_log_in_to_the_tracking_server_with_a_secret():
    for manifest in (RAYCLUSTER, RAYJOB):
        doc = load(manifest)
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        for group in (spec["headGroupSpec"], *spec["workerGroupSpecs"]):
            assert pod_spec(group)["securityContext"]["fsGroup"] == 100  # rayproject's group users
            env = {e["name"]: e for e in pod_spec(group)["containers"][0]["env"]}
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert env[name]["valueFrom"]["secretKeyRef"]["name"], f"{manifest.name}: {name}"


def test_storage_and_server_checks_can_fail():
    assert world_writable("initialization_commands:\n  - sudo mkdir -p /x && sudo chmod 777 /x\n")
    assert world_writable("chmod -R a+w /x") and world_writable("chmod o+rwx /x") and world_writable("chmod 0666 f")
    assert not world_writable("chmod 2775 /x") and not world_writable("chmod g+w /x")
    assert open_mlflow_servers("mlflow server --host 0.0.0.0 \\\n    --port 5000")
    assert not open_mlflow_servers("mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000")
    assert not open_mlflow_servers("mlflow server --host 127.0.0.1 --port 5000")
