"""deploy/compose: the compose file is valid against the official compose-spec schema (vendored), the
validator really rejects broken documents, and the names inside agree with each other and with the files they
point at: workers share a group and load as valid stampflow settings, topics exist with enough partitions,
Prometheus scrapes the worker services and loads the rules, Grafana gets the dashboard. No Docker needed."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "tools"))
import compose_check  # noqa: E402
import deploy_common  # noqa: E402
import dockerfile_check  # noqa: E402
import k8s_check  # noqa: E402

COMPOSE_DIR = compose_check.COMPOSE_FILE.parent
# Variables the file reads from the shell on purpose, with no default: unset means "absent in the container".
PASSTHROUGH = {"STAMPFLOW_SCHEMAS__REGISTRY_URL"}
# Compose's own "service name" rule (compose-spec: lower-case letters, digits, dash, underscore; loader check).
SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@pytest.fixture(scope="module")
def validator():
    return compose_check.compose_validator()


@pytest.fixture(scope="module")
def compose():
    raw, doc, missing = compose_check.load_compose()
    return raw, doc, missing


@pytest.fixture(scope="module")
def services(compose):
    return compose[1]["services"]


def workers(services) -> dict[str, dict]:
    return {n: s for n, s in services.items() if s.get("command") == ["serve"]}


def resolve(host_path: str) -> Path:
    return (COMPOSE_DIR / host_path).resolve()


# ---------------------------------------------------------------------------------------------------- schema
def test_vendored_schema_is_the_recorded_upstream_copy():
    readme = (deploy_common.SCHEMAS / "README.md").read_text()
    for path in sorted(deploy_common.SCHEMAS.glob("*.json")) + sorted(deploy_common.SCHEMAS.glob("*.yaml")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}`" in readme and digest in readme, f"{path.name}: sha256 {digest} not in README.md"


def test_compose_file_is_valid_before_and_after_interpolation(validator, compose):
    raw, doc, missing = compose
    assert deploy_common.schema_errors(validator, raw) == []
    assert deploy_common.schema_errors(validator, doc) == []
    # `docker compose up` with a clean shell must not need any variable
    assert set(missing) == set(), f"variables without a default: {sorted(set(missing))}"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["services"]["worker-1"].__setitem__("replicaz", 2), "'replicaz' was unexpected"),
    (lambda d: d["services"]["kafka"].__setitem__("ports", "9094:9094"), "is not of type 'array'"),
    (lambda d: d["services"]["worker-2"]["depends_on"]["kafka-topics"].__setitem__("condition", "when_ready"),
     "services/worker-2/depends_on: {'kafka-topics': {'condition': 'when_ready'}} is not valid"),
    (lambda d: d["services"]["replay"].__setitem__("environment", 5), "services/replay/environment: 5 is not"),
    (lambda d: d["services"]["kafka"]["healthcheck"].__setitem__("tset", ["CMD", "true"]),
     "services/kafka/healthcheck: 'tset' does not match any of the regexes"),
    (lambda d: d.__setitem__("servicez", {}), "'servicez' does not match any of the regexes"),
], ids=["unknown-service-key", "ports-not-a-list", "bad-depends-on-condition", "environment-type",
        "unknown-healthcheck-key", "unknown-top-level-key"])
def test_validator_rejects_broken_documents(validator, compose, mutate, expected):
    doc = copy.deepcopy(compose[1])
    mutate(doc)
    errors = deploy_common.schema_errors(validator, doc)
    assert any(expected in e for e in errors), errors


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    missing: list[str] = []
    got = compose_check.interpolate({"a": "${SET:-d}", "b": "${EMPTY:-d}", "c": "${EMPTY-d}", "d": "${NOPE-d}",
                          "e": "$$HOME", "f": "${SET:+alt}", "g": "pre-${NOPE}-post", "h": ["$SET"]}, env, missing)
    assert got == {"a": "x", "b": "d", "c": "", "d": "d", "e": "$HOME", "f": "alt", "g": "pre--post", "h": ["x"]}
    assert missing == ["NOPE"]
    with pytest.raises(ValueError):
        compose_check.interpolate("${NOPE:?needed}", {})


def test_only_named_variables_pass_through_unset(compose):
    raw = compose[0]
    for name, svc in raw["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if value is None:
                assert key in PASSTHROUGH, f"{name}: {key} has no value"


# ---------------------------------------------------------------------------------------------- references
def test_builds_point_at_the_dockerfile_and_a_real_target(services):
    stages = {s.name for s in dockerfile_check.parse_dockerfile().stages}
    built = [n for n, s in services.items() if "build" in s]
    assert set(workers(services)) | {"replay"} <= set(built)
    for name in built:
        build = services[name]["build"]
        context = resolve(build["context"])
        assert context == REPO, f"{name}: context {context} (the Dockerfile COPYs paths relative to the repo root)"
        assert (context / build["dockerfile"]).resolve() == dockerfile_check.DOCKERFILE
        assert build["target"] == "cpu" and build["target"] in stages
        assert services[name]["image"] == "stampflow:" + build["target"]


def test_gpu_override_is_valid_and_gives_each_worker_a_gpu(validator, compose):
    raw, override, missing = compose_check.load_compose(path=compose_check.COMPOSE_GPU_FILE)
    assert deploy_common.schema_errors(validator, raw) == [] and missing == []
    merged = compose_check.merge_compose(compose[1], override)
    assert deploy_common.schema_errors(validator, merged) == []
    stages = {s.name for s in dockerfile_check.parse_dockerfile().stages}
    assert set(override["services"]) == set(workers(compose[1]["services"]))
    for name, svc in workers(merged["services"]).items():
        assert svc["build"]["target"] == "gpu" and "gpu" in stages
        assert svc["image"] == "stampflow:gpu"
        assert resolve(svc["build"]["context"]) == REPO and svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert svc["environment"] == compose[1]["services"][name]["environment"]  # same group, same config
    assert merged["services"]["replay"]["image"] == "stampflow:cpu"


def test_merge_follows_compose_rules():
    base = {"s": {"image": "a", "ports": ["1:1"], "command": ["x"], "build": {"context": ".", "target": "cpu"}}}
    over = {"s": {"ports": ["2:2", "1:1"], "command": ["y"], "build": {"target": "gpu"}}}
    assert compose_check.merge_compose(base, over) == {"s": {"image": "a", "ports": ["1:1", "2:2"], "command": ["y"],
                                                  "build": {"context": ".", "target": "gpu"}}}


def test_every_bind_mount_source_exists(services):
    mounts = 0
    for name, svc in services.items():
        for source, target in compose_check.bind_mounts(svc):
            assert resolve(source).exists(), f"{name}: {source} -> {target} does not exist"
            mounts += 1
    assert mounts >= 6


def test_service_names_and_dependencies(services):
    for name, svc in services.items():
        assert SERVICE_NAME.match(name), name
        deps = svc.get("depends_on", {})
        for dep in (deps if isinstance(deps, list) else list(deps)):
            assert dep in services, f"{name} depends on unknown service {dep}"
        assert "container_name" not in svc, f"{name}: fixed container names break `--scale` and parallel stacks"


def test_kafka_matches_the_broker_version_we_test_against(services):
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    for name in ("kafka", "kafka-topics"):
        assert services[name]["image"] == f"apache/kafka:{version}"
    env = services["kafka"]["environment"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]  # KRaft
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env


def test_pinned_images(services):
    for name, svc in services.items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"


# -------------------------------------------------------------------------------------------------- workers
def _settings_for(service: dict, monkeypatch):
    """The worker's effective settings: the image's ENV, then the service's environment on top."""
    from stream.config import load_settings

    for name in [n for n in os.environ if n.startswith("STAMPFLOW_")]:
        monkeypatch.delenv(name)
    image_env = dockerfile_check.parse_dockerfile().stage(service["build"]["target"]).env()
    for key, value in {**image_env, **service["environment"]}.items():
        if key.startswith("STAMPFLOW_") and value is not None:
            monkeypatch.setenv(key, str(value))
    return load_settings()


def test_two_workers_in_one_consumer_group(services, monkeypatch):
    found = workers(services)
    assert len(found) >= 2, sorted(found)
    settings = {name: _settings_for(svc, monkeypatch) for name, svc in found.items()}
    groups = {s.kafka.group_id for s in settings.values()}
    assert len(groups) == 1, groups
    assert len({tuple(s.kafka.input_topics) for s in settings.values()}) == 1
    for name, s in settings.items():
        host, _, port = s.kafka.bootstrap_servers.partition(":")
        assert host in services, f"{name}: bootstrap host {host} is not a service"
        advertised = services[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"//{host}:{port}" in advertised, f"{name}: {host}:{port} is not an advertised listener"
        assert s.metrics.host == "0.0.0.0"


def test_workers_publish_distinct_host_ports_to_the_metrics_port(services, monkeypatch):
    host_ports = []
    for name, svc in workers(services).items():
        port = _settings_for(svc, monkeypatch).metrics.port
        (mapping,) = svc["ports"]
        bind, host_port, container_port = mapping.split(":")
        assert bind == "127.0.0.1" and int(container_port) == port, mapping
        host_ports.append(host_port)
    assert len(set(host_ports)) == len(host_ports), host_ports


def test_topics_are_created_with_room_for_the_group(services, monkeypatch):
    topics = dict(spec.split(":") for spec in services["kafka-topics"]["environment"]["TOPICS"].split())
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    found = workers(services)
    for svc in found.values():
        s = _settings_for(svc, monkeypatch)
        for topic in s.kafka.input_topics:
            assert int(topics[topic]) >= len(found), f"{topic}: {topics[topic]} partitions for {len(found)} workers"
        assert s.kafka.result_topic in topics and s.kafka.dead_letter_topic in topics
        assert services["kafka-topics"]["environment"]["BOOTSTRAP"] == s.kafka.bootstrap_servers
    replay = services["replay"]["command"]
    assert replay[0] == "replay" and replay[replay.index("--topic") + 1] in topics


def test_replay_job_is_one_shot_and_reads_the_bundled_alerts_by_default(services):
    replay = services["replay"]
    assert replay["profiles"] and replay["restart"] == "no"
    assert replay["healthcheck"] == {"disable": True}  # it serves no /livez
    (source, target), = compose_check.bind_mounts(replay)
    assert resolve(source) == REPO / "tests" / "fixtures" / "alerts"
    assert replay["command"][1].startswith(target)
    from stream.cli import build_parser

    args = build_parser().parse_args(replay["command"])
    assert args.func.__name__ == "cmd_replay" and args.rate > 0


def test_worker_grace_period_covers_the_shutdown_budget(services, monkeypatch):
    k8s_grace = re.search(r"terminationGracePeriodSeconds:\s*(\d+)",
                          (k8s_check.K8S / "base" / "worker-deployment.yaml").read_text()).group(1)
    for name, svc in workers(services).items():
        s = _settings_for(svc, monkeypatch)
        grace = int(svc["stop_grace_period"].rstrip("s"))
        assert grace >= s.batch.max_wait_ms / 1000 + s.kafka.delivery_timeout_s + 20 + 5, name
        assert grace == int(k8s_grace), "compose and Kubernetes should give a worker the same shutdown budget"


def test_create_topics_script(tmp_path, services):
    fake = tmp_path / "kafka-topics.sh"
    log = tmp_path / "calls"
    fake.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {log}\n")
    fake.chmod(0o755)
    env = {**services["kafka-topics"]["environment"], "KAFKA_TOPICS": str(fake), "PATH": os.environ["PATH"]}
    script = COMPOSE_DIR / "create-topics.sh"
    entry = services["kafka-topics"]["entrypoint"]
    assert _mount_source(services["kafka-topics"], entry[-1]) == script and entry[0] == "/bin/bash"
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=30)
    creates = [line for line in log.read_text().splitlines() if "--create" in line]
    expected = services["kafka-topics"]["environment"]["TOPICS"].split()
    assert len(creates) == len(expected)
    for line, spec in zip(creates, expected):
        name, partitions = spec.split(":")
        assert f"--bootstrap-server {env['BOOTSTRAP']}" in line and "--if-not-exists" in line
        assert f"--topic {name} --partitions {partitions} " in line + " "
    bad = subprocess.run(["bash", str(script)], env={**env, "TOPICS": "ztf-alerts:zero"}, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "bad topic spec" in bad.stderr


# ------------------------------------------------------------------------------------------ Prometheus, Grafana
def _mount_source(service: dict, target: str) -> Path:
    for source, tgt in compose_check.bind_mounts(service):
        if tgt == target:
            return resolve(source)
    raise AssertionError(f"nothing mounted at {target}")


def test_prometheus_scrapes_the_workers_and_loads_the_rules(services):
    prom = services["prometheus"]
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = config_arg.split("=", 1)[1]
    config_file = _mount_source(prom, config_path)
    config = yaml.safe_load(config_file.read_text())
    rules_dir = _mount_source(prom, "/etc/prometheus/rules")
    assert rules_dir.is_dir() and sorted(rules_dir.glob("*.yml")), rules_dir
    # rule_files are resolved relative to the config file's directory inside the container
    loaded = set()
    for pattern in config["rule_files"]:
        container = Path(pattern) if pattern.startswith("/") else Path(config_path).parent / pattern
        rel = container.relative_to("/etc/prometheus/rules")
        loaded |= set(rules_dir.glob(str(rel)))
    assert loaded == set(rules_dir.glob("*.yml")), "every rules file mounted should be loaded"
    alert_names = {r["alert"] for f in loaded for g in yaml.safe_load(f.read_text())["groups"]
                   for r in g["rules"] if "alert" in r}
    for alert in ("StampflowLagGrowing", "StampflowLatencyP99High", "StampflowDeadLetterRateHigh",
                  "StampflowWorkerDown", "StampflowStalled"):
        assert alert in alert_names
    targets = {t for job in config["scrape_configs"] if job["job_name"] == "stampflow"
               for sc in job.get("static_configs", []) for t in sc["targets"]}
    expected = set()
    for name, svc in workers(services).items():
        port = int(svc["environment"]["STAMPFLOW_METRICS__PORT"])
        expected.add(f"{name}:{port}")
    assert expected <= targets, f"Prometheus scrapes {sorted(targets)}, the workers are {sorted(expected)}"
    for t in targets:
        assert t.split(":")[0] in services, f"scrape target {t} is not a compose service"


def test_grafana_provisions_the_datasource_and_the_dashboard(services):
    grafana = services["grafana"]
    ds_dir = _mount_source(grafana, "/etc/grafana/provisioning/datasources")
    dash_dir = _mount_source(grafana, "/etc/grafana/provisioning/dashboards")
    datasources = [d for f in sorted(ds_dir.glob("*.y*ml")) for d in yaml.safe_load(f.read_text())["datasources"]]
    (prom_ds,) = [d for d in datasources if d["type"] == "prometheus"]
    url = re.match(r"^http://([^:/]+):(\d+)/?$", prom_ds["url"])
    assert url and url.group(1) == "prometheus" and "prometheus" in services, prom_ds["url"]
    # Prometheus listens on 9090 unless told otherwise
    assert not any(a.startswith("--web.listen-address") for a in services["prometheus"]["command"])
    assert url.group(2) == "9090"
    providers = [p for f in sorted(dash_dir.glob("*.y*ml")) for p in yaml.safe_load(f.read_text())["providers"]]
    paths = {p["options"]["path"] for p in providers}
    dashboards_mount = next(t for s, t in compose_check.bind_mounts(grafana) if t in paths)
    dashboards = sorted(_mount_source(grafana, dashboards_mount).glob("*.json"))
    assert dashboards, "no dashboard JSON to provision"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert any(f"{dashboards_mount}/{d.name}" == home for d in dashboards), home
    for path in dashboards:
        dash = json.loads(path.read_text())
        # file provisioning does not resolve "export for sharing" inputs: ${DS_...} would stay unresolved
        assert "__inputs" not in dash, f"{path.name}: exported with __inputs; save it without 'export externally'"
        text = json.dumps(dash)
        for uid in re.findall(r'"datasource": \{[^}]*"uid": "([^"]+)"', text):
            assert uid.startswith("$") or uid in {d["uid"] for d in datasources} | {"grafana", "-- Grafana --"}, uid


def test_secure_override_connects_with_kafka_common_only_and_keeps_the_password_out_of_files(validator, compose,
                                                                                           monkeypatch, tmp_path):
    path = COMPOSE_DIR / "docker-compose.secure.yml"
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"STAMPFLOW_KAFKA_BOOTSTRAP": "broker.example.org:9093", "STAMPFLOW_KAFKA_PASSWORD": "pw-from-the-shell",
           "STAMPFLOW_KAFKA_CA_FILE": str(ca)}
    raw, override, missing = compose_check.load_compose(env, path=path)
    assert deploy_common.schema_errors(validator, raw) == [] and missing == []
    # Every secret comes from the shell at `up` time, and a missing one stops compose with a message.
    assert "pw-from-the-shell" not in path.read_text()
    for name in env:
        with pytest.raises(ValueError, match=name):
            compose_check.load_compose({k: v for k, v in env.items() if k != name}, path=path)
    merged = compose_check.merge_compose(compose[1], override)
    assert deploy_common.schema_errors(validator, merged) == []
    assert merged["secrets"]["kafka-ca"]["file"] == str(ca)
    for name in ("worker-1", "worker-2", "replay"):
        svc = merged["services"][name]
        (secret,) = svc["secrets"]
        s = _settings_for(svc, monkeypatch)
        common = s.kafka.common
        assert s.kafka.bootstrap_servers == "broker.example.org:9093"
        assert common["security.protocol"] == "SASL_SSL" and common["sasl.mechanism"] == "SCRAM-SHA-512"
        assert common["sasl.password"] == "pw-from-the-shell" == s.consumer_config()["sasl.password"]
        assert common["ssl.ca.location"] == f"/run/secrets/{secret['target']}" and secret["source"] == "kafka-ca"
        assert "pw-from-the-shell" not in json.dumps(s.masked()) + repr(s)
        # The rest of the worker's settings are the base file's: same group, topics and metrics port.
        base = _settings_for(compose[1]["services"][name], monkeypatch)
        assert (s.kafka.group_id, s.kafka.input_topics, s.metrics.port) == (base.kafka.group_id,
                                                                             base.kafka.input_topics, base.metrics.port)
