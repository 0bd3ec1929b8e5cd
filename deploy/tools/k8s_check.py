"""Offline checks of deploy/k8s: render each kustomization with the pinned kustomize, then validate every
object strictly: built-in kinds with kubernetes-validate for the oldest and newest supported Kubernetes, CRD
kinds (KEDA, prometheus-operator) against the vendored CRD schemas, and KEDA's kafka trigger metadata against
the schema generated from the scaler's source (keda_kafka_schema.py)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml
from referencing import Registry, Resource

from deploy_common import DEPLOY, SCHEMAS, load_yaml, schema_errors, tools_bin

K8S = DEPLOY / "k8s"
K8S_TARGETS = ("base", "overlays/cpu", "overlays/gpu")
# Oldest and newest Kubernetes minor the manifests must be valid for (both bundled with kubernetes-validate).
K8S_VERSIONS = ("1.32.0", "1.37.0")
# apiVersion/kind -> the vendored CRD that defines it.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
}
KEDA_KAFKA_SCHEMA = SCHEMAS / "keda-kafka-trigger.schema.json"
K8S_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"


def kustomize_build(target: str | Path) -> list[dict]:
    """Render a kustomization with the pinned kustomize (deploy/tools/install-validators.sh)."""
    exe = tools_bin() / "kustomize"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} is missing: run `bash deploy/tools/install-validators.sh`")
    path = Path(target) if Path(target).is_absolute() else K8S / target
    proc = subprocess.run([str(exe), "build", str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize build {path} failed: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _k8s_definitions(version: str) -> dict:
    import importlib.resources

    schema_dir = f"v{version}-local-strict"
    ref = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / schema_dir / "_definitions.json"
    return json.loads(ref.read_text())


def _strict(node: Any) -> Any:
    """OpenAPI v3 (structural CRD schema) -> JSON Schema that rejects unknown fields, as the API server does
    with field validation Strict (kubectl's default since 1.27): every object schema that lists properties
    and does not preserve unknown fields gets additionalProperties: false; `nullable` becomes a null type."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_schema(filename: str, api_version: str) -> dict:
    crd = load_yaml(SCHEMAS / filename)
    version = api_version.split("/")[-1]
    for v in crd["spec"]["versions"]:
        if v["name"] == version and v.get("served", True):
            schema = _strict(v["schema"]["openAPIV3Schema"])
            break
    else:
        raise KeyError(f"{filename} serves no version {version}")
    props = schema.setdefault("properties", {})
    # A CRD's own schema says only `metadata: {type: object}`; the API server still validates ObjectMeta.
    props["metadata"] = {"$ref": K8S_DEFINITIONS_ID + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def validate_custom_resource(doc: dict, version: str) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = crd_schema(CRDS[key], key[0])
    registry = Resource.from_contents(_k8s_definitions(version)) @ Registry()
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = schema_errors(validator, doc)
    if key == ("keda.sh/v1alpha1", "ScaledObject"):
        errors += _keda_kafka_errors(doc)
    elif key == ("keda.sh/v1alpha1", "TriggerAuthentication"):
        errors += _keda_auth_errors(doc)
    return errors


def _keda_defs() -> dict:
    return json.loads(KEDA_KAFKA_SCHEMA.read_text())


def _keda_kafka_errors(doc: dict) -> list[str]:
    schema = _keda_defs()
    meta_schema = {**schema["$defs"]["metadata"], "$schema": schema["$schema"]}
    validator = jsonschema.Draft202012Validator(meta_schema)
    errors = []
    for n, trig in enumerate(doc.get("spec", {}).get("triggers", []) or []):
        if trig.get("type") == "kafka":
            errors += schema_errors(validator, trig.get("metadata", {}), prefix=f"spec/triggers/{n}/metadata")
    return errors


def _keda_auth_errors(doc: dict) -> list[str]:
    allowed = set(_keda_defs()["$defs"]["authParams"]["properties"])
    errors = []
    for n, ref in enumerate(doc.get("spec", {}).get("secretTargetRef", []) or []):
        if ref.get("parameter") not in allowed:
            errors.append(f"spec/secretTargetRef/{n}/parameter: {ref.get('parameter')!r} is not a kafka scaler "
                          f"authentication parameter ({', '.join(sorted(allowed))})")
    return errors


def validate_k8s(doc: dict, version: str) -> list[str]:
    """Errors of one manifest for one Kubernetes version; built-in kinds via kubernetes-validate (strict),
    CRD kinds via the vendored CRD schemas. A kind known to neither is an error, never a silent pass."""
    import kubernetes_validate

    if (doc.get("apiVersion"), doc.get("kind")) in CRDS:
        return validate_custom_resource(doc, version)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"no schema: {exc.message}"]
    return []


def resource_id(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def find(docs: Iterable[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind}{'/' + name if name else ''}, found {len(hits)}")
    return hits[0]
