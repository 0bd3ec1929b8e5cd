"""deploy/k8s: every kustomization renders with the pinned kustomize, every rendered object is valid for the
oldest and newest supported Kubernetes (kubernetes-validate, strict) or against the vendored CRD schemas
(KEDA, prometheus-operator), the validators reject broken manifests, and the pieces agree with each other:
probes and ports, selectors, config file and Secret, KEDA trigger and worker config, replica cap and
partitions, shutdown budget and grace period, GPU scheduling."""
from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "tools"))
import deploy_common  # noqa: E402
import dockerfile_check  # noqa: E402
import k8s_check  # noqa: E402

OVERLAYS = ("overlays/cpu", "overlays/gpu")
PARTITIONS_ANNOTATION = "stampflow.io/input-topic-partitions"
# One model call on a full batch, the slowest we serve on CPU (see the comment in worker-deployment.yaml),
# plus commit and close after the final flush.
MODEL_CALL_BUDGET_S = 20
# librdkafka sasl.mechanism -> KEDA kafka scaler `sasl`
LIBRDKAFKA_TO_KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512",
                           "OAUTHBEARER": "oauthbearer", "GSSAPI": "gssapi"}
CLOSE_BUDGET_S = 5


@pytest.fixture(scope="session")
def validators_installed() -> None:
    """What `make test` runs first; a no-op when kustomize is already there, so tests also work on their own."""
    proc = subprocess.run(["bash", str(deploy_common.DEPLOY / "tools" / "install-validators.sh")], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="session")
def rendered(validators_installed) -> dict[str, list[dict]]:
    return {target: k8s_check.kustomize_build(target) for target in k8s_check.K8S_TARGETS}


def only(docs, kind, name=None):
    return k8s_check.find(docs, kind, name)


def container(docs) -> dict:
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def config_map_yaml(docs) -> dict:
    dep = only(docs, "Deployment")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    env = {e["name"]: e for e in container(docs)["env"]}
    path = Path(env["STAMPFLOW_CONFIG_FILE"]["value"])
    mount = next(m for m in container(docs)["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    cm = only(docs, "ConfigMap", cm_name)  # the generated (hash-suffixed) name, rewritten into the volume
    return yaml.safe_load(cm["data"][path.name])


def effective_settings(docs, monkeypatch, tmp_path):
    """The worker's settings as the pod would load them: the image ENV, the container env (Secret values
    replaced by placeholders), STAMPFLOW_CONFIG_FILE pointing at the ConfigMap's file."""
    from stream.config import load_settings

    for name in [n for n in os.environ if n.startswith("STAMPFLOW_")]:
        monkeypatch.delenv(name)
    target = "gpu" if "gpu" in only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] \
        else "cpu"
    for key, value in dockerfile_check.parse_dockerfile().stage(target).env().items():
        if key.startswith("STAMPFLOW_"):
            monkeypatch.setenv(key, value)
    config_file = tmp_path / "stampflow.yaml"
    config_file.write_text(yaml.safe_dump(config_map_yaml(docs)))
    for e in container(docs)["env"]:
        if not e["name"].startswith("STAMPFLOW_"):
            continue
        if e["name"] == "STAMPFLOW_CONFIG_FILE":
            monkeypatch.setenv(e["name"], str(config_file))
        elif "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            monkeypatch.setenv(e["name"], f"<{ref['name']}/{ref['key']}>")
    return load_settings()


# ---------------------------------------------------------------------------------------------------- tools
def test_install_validators_is_idempotent_and_pins_kustomize(validators_installed):
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(deploy_common.DEPLOY / "tools" / "install-validators.sh")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and time.monotonic() - t0 < 10, proc.stderr
    pinned = re.search(r"KUSTOMIZE_VERSION:-(v[0-9.]+)",
                       (deploy_common.DEPLOY / "tools" / "install-validators.sh").read_text())
    out = subprocess.run([str(deploy_common.tools_bin() / "kustomize"), "version"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == pinned.group(1)


def test_vendored_crds_are_what_the_validator_uses():
    for (api_version, kind), filename in k8s_check.CRDS.items():
        crd = deploy_common.load_yaml(deploy_common.SCHEMAS / filename)
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind
        storage = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
        assert api_version == f"{crd['spec']['group']}/{storage}"


# ------------------------------------------------------------------------------------------------ validity
def test_every_target_renders_the_expected_objects(rendered):
    kinds = {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
             "ScaledObject", "TriggerAuthentication"}
    assert {d["kind"] for d in rendered["base"]} == kinds
    for overlay in OVERLAYS:
        assert {d["kind"] for d in rendered[overlay]} == kinds | {"ServiceMonitor"}
        assert {d["metadata"].get("namespace") for d in rendered[overlay] if d["kind"] != "Namespace"} == {
            only(rendered[overlay], "Namespace")["metadata"]["name"]}


@pytest.mark.parametrize("version", k8s_check.K8S_VERSIONS)
@pytest.mark.parametrize("target", k8s_check.K8S_TARGETS)
def test_rendered_manifests_are_valid(rendered, target, version):
    problems = {k8s_check.resource_id(d): k8s_check.validate_k8s(d, version) for d in rendered[target]}
    assert {k: v for k, v in problems.items() if v} == {}


def _mutations():
    def dep(docs):
        return copy.deepcopy(only(docs, "Deployment"))

    def so(docs):
        return copy.deepcopy(only(docs, "ScaledObject"))

    def m_replicas(docs):
        d = dep(docs)
        d["spec"]["replicas"] = "two"
        return d, "spec/replicas: 'two' is not of type 'integer'"

    def m_container_field(docs):
        d = dep(docs)
        d["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
        return d, "'readinesProbe' was unexpected"

    def m_container_name(docs):
        d = dep(docs)
        del d["spec"]["template"]["spec"]["containers"][0]["name"]
        return d, "'name' is a required property"

    def m_probe_port(docs):
        d = dep(docs)
        d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [9108]
        return d, "livenessProbe/httpGet/port"

    def m_so_target(docs):
        d = so(docs)
        del d["spec"]["scaleTargetRef"]
        return d, "'scaleTargetRef' is a required property"

    def m_so_type(docs):
        d = so(docs)
        d["spec"]["maxReplicaCount"] = "12"
        return d, "spec/maxReplicaCount: '12' is not of type 'integer'"

    def m_so_unknown(docs):
        d = so(docs)
        d["spec"]["maxReplicas"] = 3
        return d, "'maxReplicas' was unexpected"

    def m_so_metadata_key(docs):
        d = so(docs)
        d["spec"]["triggers"][0]["metadata"]["lagTreshold"] = d["spec"]["triggers"][0]["metadata"].pop("lagThreshold")
        return d, "'lagTreshold' was unexpected"

    def m_so_metadata_value(docs):
        d = so(docs)
        d["spec"]["triggers"][0]["metadata"]["lagThreshold"] = "5k"
        return d, "lagThreshold: '5k' does not match"

    def m_so_metadata_required(docs):
        d = so(docs)
        del d["spec"]["triggers"][0]["metadata"]["consumerGroup"]
        return d, "spec/triggers/0/metadata"

    def m_so_objectmeta(docs):
        d = so(docs)
        d["metadata"]["label"] = {"a": "b"}
        return d, "'label' was unexpected"

    def m_sm_field(docs):
        d = copy.deepcopy(only(docs, "ServiceMonitor"))
        d["spec"]["endpoints"][0]["scrapeInterval"] = "15s"
        return d, "'scrapeInterval' was unexpected"

    def m_auth_param(docs):
        d = copy.deepcopy(only(docs, "TriggerAuthentication"))
        d["spec"]["secretTargetRef"][0]["parameter"] = "user"
        return d, "'user' is not a kafka scaler authentication parameter"

    def m_unknown_kind(docs):
        d = copy.deepcopy(only(docs, "ScaledObject"))
        d["apiVersion"] = "keda.sh/v1"
        return d, "no schema"

    return [m_replicas, m_container_field, m_container_name, m_probe_port, m_so_target, m_so_type, m_so_unknown,
            m_so_metadata_key, m_so_metadata_value, m_so_metadata_required, m_so_objectmeta, m_sm_field,
            m_auth_param, m_unknown_kind]


@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__[2:])
def test_validator_rejects_broken_manifests(rendered, mutate):
    doc, expected = mutate(rendered["overlays/gpu"])
    for version in k8s_check.K8S_VERSIONS:
        errors = k8s_check.validate_k8s(doc, version)
        assert any(expected in e for e in errors), (version, errors)


# --------------------------------------------------------------------------------------------- consistency
@pytest.mark.parametrize("target", k8s_check.K8S_TARGETS)
def test_selectors_ports_and_probes_line_up(rendered, target, monkeypatch, tmp_path):
    docs = rendered[target]
    dep = only(docs, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in dep["spec"], "KEDA's HPA owns the replica count"

    def selects(selector):
        return selector and all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(dep["spec"]["selector"]["matchLabels"])
    svc = only(docs, "Service")
    assert selects(svc["spec"]["selector"]) and svc["spec"]["publishNotReadyAddresses"] is True
    assert selects(only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])

    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    settings = effective_settings(docs, monkeypatch, tmp_path)
    assert ports["metrics"] == settings.metrics.port
    assert settings.metrics.host == "0.0.0.0"
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/livez"
    assert {p["port"] for p in probes.values()} == {"metrics"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "model loading needs minutes"
    # liveness must not fire before the worker's own notion of stuck (metrics.live_timeout_s) has passed
    assert c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"] >= 30
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] == "metrics" and svc_port["name"] == "metrics"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.metrics.port
    assert annotations["prometheus.io/path"] == "/metrics"
    # deploy/prometheus/prometheus.yml's kubernetes_sd example keeps pods by this label and port name
    assert pod_labels["app.kubernetes.io/name"] == "stampflow"
    if target != "base":
        sm = only(docs, "ServiceMonitor")
        assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
        assert {e["port"] for e in sm["spec"]["endpoints"]} == {svc_port["name"]}


@pytest.mark.parametrize("target", k8s_check.K8S_TARGETS)
def test_config_and_secrets_reach_the_worker(rendered, target, monkeypatch, tmp_path):
    docs = rendered[target]
    raw = config_map_yaml(docs)
    # the image's environment overrides these, so setting them in the file would silently do nothing
    assert "host" not in raw.get("metrics", {}) and "artifact_dirs" not in raw.get("models", {})
    settings = effective_settings(docs, monkeypatch, tmp_path)
    consumer = settings.consumer_config()
    assert consumer["sasl.username"] == "<stampflow-kafka/username>"
    assert consumer["sasl.password"] == "<stampflow-kafka/password>"
    assert consumer["security.protocol"] == "SASL_SSL"
    assert settings.producer_config()["sasl.password"] == "<stampflow-kafka/password>"
    assert "<stampflow-kafka/password>" not in str(settings.masked()), "the password must be masked in config show"
    # the CA file librdkafka is told to read is the key of the mounted TLS Secret
    ca = Path(consumer["ssl.ca.location"])
    c = container(docs)
    volumes = {v["name"]: v for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == ca.parent]
    assert volumes[mount["name"]]["secret"]["secretName"] == "stampflow-kafka-tls" and ca.name == "ca.crt"
    # read-only root: everything that writes has a writable mount
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [Path(m["mountPath"]) for m in c["volumeMounts"] if not m.get("readOnly")]
    env = {e["name"]: e.get("value") for e in c["env"]}
    for var in ("KERAS_HOME", "MPLCONFIGDIR"):
        assert any(Path(env[var]).is_relative_to(w) for w in writable), var


def test_pod_runs_as_the_image_user(rendered):
    dockerfile = dockerfile_check.parse_dockerfile()
    for overlay, image_target in (("overlays/cpu", "cpu"), ("overlays/gpu", "gpu")):
        stage = dockerfile.stage(image_target)
        args = {i.value.split("=")[0]: i.value.split("=", 1)[1] for i in stage.all("ARG") if "=" in i.value}
        uid, _, gid = dockerfile_check.substitute(stage.all("USER")[-1].value, args).partition(":")
        pod = only(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsGroup"] == int(gid)
        image = container(rendered[overlay])["image"]
        assert image.endswith(f"-{image_target}"), image
        assert container(rendered[overlay])["args"] == dockerfile.stage(image_target).all("CMD")[-1].exec_form()


@pytest.mark.parametrize("target", k8s_check.K8S_TARGETS)
def test_grace_period_covers_batch_flush_and_commit(rendered, target, monkeypatch, tmp_path):
    settings = effective_settings(rendered[target], monkeypatch, tmp_path)
    grace = only(rendered[target], "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    budget = settings.batch.max_wait_ms / 1000 + MODEL_CALL_BUDGET_S + settings.kafka.delivery_timeout_s \
        + CLOSE_BUDGET_S
    assert grace >= math.ceil(budget), f"terminationGracePeriodSeconds {grace} < shutdown budget {budget:.1f} s"
    assert grace <= budget + 30, "a much longer grace period only slows rollouts and drains"


@pytest.mark.parametrize("target", k8s_check.K8S_TARGETS)
def test_keda_scales_the_worker_on_its_own_group_and_topics(rendered, target, monkeypatch, tmp_path):
    docs = rendered[target]
    settings = effective_settings(docs, monkeypatch, tmp_path)
    so = only(docs, "ScaledObject")
    dep = only(docs, "Deployment")
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    kafka = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
    assert {t["metadata"]["topic"] for t in kafka} == set(settings.kafka.input_topics)
    auths = {a["metadata"]["name"]: a for a in docs if a["kind"] == "TriggerAuthentication"}
    secret_keys = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                   for e in container(docs)["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]}
    for trig in kafka:
        meta = trig["metadata"]
        assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
        assert meta["consumerGroup"] == settings.kafka.group_id
        assert meta["offsetResetPolicy"] == settings.kafka.auto_offset_reset
        assert meta.get("allowIdleConsumers", "false") == "false"
        # KEDA must speak to the broker the way the worker does
        common = settings.kafka.common
        assert (meta["tls"] == "enable") == (common["security.protocol"] in ("SSL", "SASL_SSL"))
        assert meta["sasl"] == LIBRDKAFKA_TO_KEDA_SASL[common["sasl.mechanism"]]
        auth = auths[trig["authenticationRef"]["name"]]
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert {refs["username"], refs["password"]} <= secret_keys
        assert refs["ca"] == ("stampflow-kafka-tls", "ca.crt")


@pytest.mark.parametrize("target", k8s_check.K8S_TARGETS)
def test_replica_cap_does_not_exceed_the_partitions(rendered, target):
    so = only(rendered[target], "ScaledObject")
    partitions = int(so["metadata"]["annotations"][PARTITIONS_ANNOTATION])
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
    pdb = only(rendered[target], "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    strategy = only(rendered[target], "Deployment")["spec"]["strategy"]["rollingUpdate"]
    # readiness needs a partition: a surge pod beyond the partition count would never become Ready
    assert strategy["maxSurge"] == 0 and strategy["maxUnavailable"] >= 1


def test_replica_cap_check_catches_an_overshoot(rendered, tmp_path):
    overlay = tmp_path / "overshoot"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(k8s_check.K8S / "overlays" / "cpu", overlay)],
        "patches": [{"target": {"kind": "ScaledObject"},
                     "patch": "- op: replace\n  path: /spec/maxReplicaCount\n  value: 24\n"}]}))
    docs = k8s_check.kustomize_build(overlay)
    with pytest.raises(AssertionError):
        test_replica_cap_does_not_exceed_the_partitions({"x": docs}, "x")


def test_gpu_overlay_asks_for_a_gpu_node_and_cpu_does_not(rendered):
    gpu = only(rendered["overlays/gpu"], "Deployment")["spec"]["template"]["spec"]
    res = container(rendered["overlays/gpu"])["resources"]
    assert str(res["limits"]["nvidia.com/gpu"]) == "1" and str(res["requests"]["nvidia.com/gpu"]) == "1"
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    assert container(rendered["overlays/gpu"])["image"].endswith("-gpu")
    gpu_so = only(rendered["overlays/gpu"], "ScaledObject")
    assert gpu_so["spec"]["maxReplicaCount"] <= int(gpu_so["metadata"]["annotations"][PARTITIONS_ANNOTATION])

    cpu = only(rendered["overlays/cpu"], "Deployment")["spec"]["template"]["spec"]
    cpu_res = container(rendered["overlays/cpu"])["resources"]
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    assert not any("nvidia.com" in k for part in cpu_res.values() for k in part)
    assert container(rendered["overlays/cpu"])["image"].endswith("-cpu")
    # thread pools follow the CPU request on CPU workers
    threads = {e["name"]: e for e in container(rendered["overlays/cpu"])["env"]}
    assert threads["TF_NUM_INTRAOP_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"


def test_production_docs_name_the_secrets_the_manifests_use(rendered):
    docs_text = (REPO / "docs" / "production.md").read_text()
    docs = rendered["overlays/cpu"]
    wanted = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
              for e in container(docs)["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]:
        if "secret" in v:
            wanted.add((v["secret"]["secretName"], "ca.crt"))
    commands = re.findall(r"kubectl create secret generic (\S+)(.*?)(?:\n(?!\s)|$)", docs_text, re.S)
    documented = {(name, key) for name, rest in commands for key in re.findall(r"--from-(?:literal|file)=([^=\s]+)=",
                                                                                 rest)}
    assert wanted <= documented, f"docs/production.md should show how to create {sorted(wanted - documented)}"
    for alert in ("StampflowLagGrowing", "StampflowLatencyP99High", "StampflowDeadLetterRateHigh",
                  "StampflowWorkerDown", "StampflowStalled"):
        assert alert in docs_text
