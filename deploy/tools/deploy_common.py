"""What every deployment check shares: where the repository, the deploy files and the vendored schemas are,
where the validator binaries live, and how a YAML file and a schema violation are read and reported."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "tools" / "schemas"


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


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any, prefix: str = "") -> list[str]:
    """One line per schema violation: 'path/to/field: message' (prefix + path; '<root>' for the top)."""
    return sorted(f"{'/'.join([prefix] * bool(prefix) + list(map(str, e.absolute_path))) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(doc))
