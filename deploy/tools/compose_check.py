"""Offline checks of deploy/compose: the compose-spec schema validator, compose's variable interpolation, and
how `docker compose -f base -f override` merges two files."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from deploy_common import DEPLOY, SCHEMAS, load_yaml

COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
COMPOSE_GPU_FILE = DEPLOY / "compose" / "docker-compose.gpu.yml"


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


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
