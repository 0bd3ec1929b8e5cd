"""Offline checks for the deployment files: Dockerfile, compose file, Kubernetes manifests.

Used by tests/unit/test_deploy_*.py, and runnable by hand:

    python deploy/tools/deploycheck.py            # everything; exit 1 and one line per problem if any fails

Nothing here touches the network: hadolint and kubernetes-validate come from PyPI (dev extra), kustomize from
deploy/tools/install-validators.sh, and the compose-spec, CRD and KEDA scaler schemas are vendored in
deploy/tools/schemas/ (provenance in schemas/README.md).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "tools" / "schemas"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
COMPOSE_GPU_FILE = DEPLOY / "compose" / "docker-compose.gpu.yml"
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


def tools_bin() -> Path:
    return Path(os.environ.get("STAMPFLOW_TOOLS_DIR", REPO / ".cache" / "tools")) / "bin"


def venv_tool(name: str) -> str:
    """A console script next to the running interpreter (the venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH (pip install -e '.[dev]')")
    return found


# ============================================================================================== Dockerfile
@dataclass
class Instruction:
    keyword: str          # upper case: FROM, RUN, COPY, ...
    value: str            # the rest of the instruction, continuation lines joined, flags included
    line: int             # 1-based line of the keyword

    @property
    def flags(self) -> dict[str, str]:
        out = {}
        for tok in self.value.split():
            if not tok.startswith("--"):
                break
            k, _, v = tok[2:].partition("=")
            out[k] = v
        return out

    @property
    def body(self) -> str:
        """The value without leading --flags."""
        toks = self.value.split(" ")
        while toks and (toks[0].startswith("--") or toks[0] == ""):
            toks.pop(0)
        return " ".join(toks).strip()

    def exec_form(self) -> list[str] | None:
        body = self.body
        if body.startswith("["):
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError:
                return None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                return parsed
        return None


@dataclass
class Stage:
    name: str | None
    base: str                       # FROM argument with global ARGs substituted
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for tok in shlex.split(ins.value, posix=True):
                key, sep, value = tok.partition("=")
                if not sep:
                    raise ValueError(f"line {ins.line}: ENV without '=' ({tok!r}); use the KEY=VALUE form")
                out[key] = value
        return out


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r} (stages: {[s.name for s in self.stages]})")

    def ancestry(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        chain = [self.stage(name)]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Dockerfile lines with backslash continuations joined and comment lines (also inside continuations)
    dropped, as BuildKit reads them."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        yield start, " ".join(b for b in buf if b)
        buf = []
    if buf:
        yield start, " ".join(buf)


_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def substitute(value: str, args: dict[str, str]) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        keyword, _, value = text.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            parts = value.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = substitute(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=base, line=line))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {line}: {keyword} before the first FROM")
            key, _, default = value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value, line))
    return Dockerfile(global_args, stages)


def hadolint(path: Path = DOCKERFILE) -> list[dict]:
    """hadolint's findings at every level (error, warning, info, style) as dicts; [] means clean. The repo's
    own config is passed explicitly so a developer's ~/.config/hadolint.yaml cannot silence a rule."""
    config = DEPLOY / "tools" / "hadolint.yaml"
    proc = subprocess.run([venv_tool("hadolint"), "--config", str(config), "--format", "json", "--no-color",
                           str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode not in (0, 1) or not proc.stdout.strip().startswith("["):
        raise RuntimeError(f"hadolint failed (rc {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout)


# ------------------------------------------------------------------------------------------- .dockerignore
@dataclass
class IgnorePattern:
    regex: re.Pattern
    exclusion: bool       # a `!` line: re-include
    text: str


def _pattern_regex(pattern: str) -> re.Pattern:
    # Go filepath.Match semantics plus `**`, as in moby/patternmatcher.
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.index("]", i)
            out.append("[" + pattern[i + 1:j].replace("!", "^", 1) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def read_dockerignore(path: Path = DOCKERIGNORE) -> list[IgnorePattern]:
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/")
        patterns.append(IgnorePattern(_pattern_regex(line), exclusion, raw.strip()))
    return patterns


def is_ignored(relpath: str, patterns: list[IgnorePattern]) -> bool:
    """Whether the build context leaves `relpath` (relative to the context root) out. A pattern that matches a
    parent directory matches everything below it; the last matching pattern decides."""
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    ignored = False
    for p in patterns:
        if any(p.regex.match(c) for c in candidates):
            ignored = not p.exclusion
    return ignored


def copy_sources(ins: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of a COPY/ADD."""
    form = ins.exec_form()
    toks = form if form is not None else shlex.split(ins.body)
    return toks[:-1], toks[-1]


def context_files(source: str, patterns: list[IgnorePattern], root: Path = REPO) -> list[str]:
    """Files under a COPY source that reach the build context (relative paths)."""
    src = root / source
    if src.is_file():
        rel = src.relative_to(root).as_posix()
        return [] if is_ignored(rel, patterns) else [rel]
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            rel = (Path(dirpath) / f).relative_to(root).as_posix()
            if not is_ignored(rel, patterns):
                out.append(rel)
    return sorted(out)


# ================================================================================================ compose
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any, prefix: str = "") -> list[str]:
    """One line per schema violation: 'path/to/field: message' (prefix + path; '<root>' for the top)."""
    return sorted(f"{'/'.join([prefix] * bool(prefix) + list(map(str, e.absolute_path))) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(doc))


_INTERP = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                     r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def interpolate(obj: Any, env: dict[str, str], missing: list[str] | None = None) -> Any:
    """Compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR:+alt},
    $$) over every string value of a loaded compose document. Names used without a default and not in `env`
    are appended to `missing` and become "" (what `docker compose` does, with a warning)."""
    if isinstance(obj, dict):
        return {k: interpolate(v, env, missing) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate(v, env, missing) for v in obj]
    if not isinstance(obj, str):
        return obj

    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return interpolate(arg, env, missing) if unset else value
        if op in (":+", "+"):
            set_ = value is not None and (op == "+" or value != "")
            return interpolate(arg, env, missing) if set_ else ""
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise ValueError(f"required variable {name} is not set: {arg}")
            return value
        if value is None:
            if missing is not None:
                missing.append(name)
            return ""
        return value

    return _INTERP.sub(repl, obj)


def load_compose(env: dict[str, str] | None = None, path: Path = COMPOSE_FILE) -> tuple[dict, dict, list[str]]:
    """(raw document, interpolated document, variables used without a default)."""
    raw = load_yaml(path)
    missing: list[str] = []
    return raw, interpolate(copy.deepcopy(raw), env or {}, missing), missing


# Sequences that compose appends (deduplicated) when a later -f file names them again; others are replaced.
_COMPOSE_APPEND = {"ports", "expose", "volumes", "devices", "dns", "dns_search", "tmpfs", "extra_hosts", "env_file",
                   "secrets", "configs", "cap_add", "cap_drop", "security_opt"}


def merge_compose(base: Any, override: Any, key: str = "") -> Any:
    """`docker compose -f base -f override`: mappings merge key by key, the sequences above append, anything
    else in the override replaces the base value."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge_compose(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(override, list) and key in _COMPOSE_APPEND:
        return base + [v for v in override if v not in base]
    return copy.deepcopy(override)


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host source, container target) of a service's bind mounts, short and long syntax."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) >= 2 and (parts[0].startswith((".", "/", "~")) or parts[0] == ""):
                out.append((parts[0], parts[1]))
        elif vol.get("type") == "bind":
            out.append((vol["source"], vol["target"]))
    return out


# ============================================================================================= Kubernetes
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


# ================================================================================================== main
def main() -> int:
    problems: list[str] = []
    problems += [f"Dockerfile:{f['line']}: {f['code']} {f['message']}" for f in hadolint()]
    raw, doc, missing = load_compose()
    gpu_raw, gpu_doc, _ = load_compose(path=COMPOSE_GPU_FILE)
    validator = compose_validator()
    problems += [f"compose: {e}" for e in schema_errors(validator, raw) + schema_errors(validator, doc)]
    problems += [f"compose (+gpu): {e}" for e in schema_errors(validator, gpu_raw)
                 + schema_errors(validator, merge_compose(doc, gpu_doc))]
    for target in K8S_TARGETS:
        for d in kustomize_build(target):
            for version in K8S_VERSIONS:
                problems += [f"k8s {target} {resource_id(d)} @{version}: {e}" for e in validate_k8s(d, version)]
    for p in problems:
        print(p)
    print(f"deploycheck: {'OK' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
