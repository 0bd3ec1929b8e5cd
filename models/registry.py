"""Model registry: versioned artifacts on disk, each a directory with ``metadata.json`` plus weights.

Layout: ``<root>/<name>/<version>/metadata.json``. The metadata names the family, the training data, metrics,
date and code version. Loading never unpickles: ``.npz`` with ``allow_pickle=False``, JSON, or ``.keras`` in
safe mode.

The serving class follows from the artifact itself, not from a table of families: a Keras network (every CNN
family, served by one metadata-driven class) or the star/galaxy GP's plain-array ``weights.npz``. So a new CNN
family needs nothing here; only a new kind of serving class adds one line to `SERVING` (docs/families.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from models.base import Classifier, ModelInfo
from models.cnn import KerasCNN
from models.stargal import StarGalaxyGP
from schemas.errors import StampflowError

BUNDLED_ROOT = Path(__file__).resolve().parent / "artifacts"

# serving kind -> (weights file suffix, serving class). Both classes import TensorFlow / MuyGPyS only when a
# model is loaded, so listing models stays cheap.
SERVING: dict[str, tuple[str, type[Classifier]]] = {
    "keras": (".keras", KerasCNN),         # every CNN family (docs/models.md)
    "gp": (".npz", StarGalaxyGP),          # the star/galaxy MuyGPs model's plain arrays
}

REQUIRED_METADATA = ("name", "version", "family", "training_data", "metrics", "created", "code_version")


def version_key(version: str) -> tuple:
    """Sort key for versions: numeric parts numerically (1.10.0 after 1.9.0), other parts after numbers."""
    parts = []
    for p in version.replace("-", ".").split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


def read_metadata(path: Path) -> dict:
    meta_file = path / "metadata.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise StampflowError(f"model artifact {path} has no metadata.json") from None
    except json.JSONDecodeError as exc:
        raise StampflowError(f"model metadata {meta_file} is not valid JSON: {exc}") from None
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise StampflowError(f"model metadata {meta_file} lacks {', '.join(missing)}")
    return meta


class Registry:
    """Lists and loads artifacts from one or more roots (the bundled root last, so local models win)."""

    def __init__(self, roots: Iterable[Path] | None = None):
        self.roots = [Path(r) for r in (roots or [])]
        if BUNDLED_ROOT not in self.roots:
            self.roots.append(BUNDLED_ROOT)

    def list(self) -> list[ModelInfo]:
        found: dict[tuple[str, str], ModelInfo] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for meta_file in sorted(root.glob("*/*/metadata.json")):
                meta = read_metadata(meta_file.parent)
                key = (meta["name"], meta["version"])
                found.setdefault(key, ModelInfo(name=meta["name"], version=meta["version"], family=meta["family"],
                                                path=meta_file.parent, metadata=meta))
        return sorted(found.values(), key=lambda i: (i.name, version_key(i.version)))

    def resolve(self, spec: str) -> ModelInfo:
        """``name`` (latest version) or ``name@version`` or a path to an artifact directory."""
        as_path = Path(spec)
        if as_path.is_dir() and (as_path / "metadata.json").exists():
            meta = read_metadata(as_path)
            return ModelInfo(meta["name"], meta["version"], meta["family"], as_path, meta)
        name, _, version = spec.partition("@")
        candidates = [i for i in self.list() if i.name == name and (not version or i.version == version)]
        if not candidates:
            known = ", ".join(sorted({i.name for i in self.list()})) or "none"
            raise StampflowError(f"no model '{spec}' in the registry (known: {known})")
        return candidates[-1]

    def load(self, spec: str) -> Classifier:
        info = self.resolve(spec)
        return SERVING[serving_kind(info)][1].load(info)


def serving_kind(info: ModelInfo) -> str:
    """Which `SERVING` kind serves an artifact: the one whose suffix its weights file has. CNN metadata names
    the file (``"weights": "model.keras"``); otherwise the artifact directory must hold exactly one weights file."""
    named = info.metadata.get("weights")
    suffixes = {suffix: kind for kind, (suffix, _) in SERVING.items()}
    if named:
        files = [Path(named)]
    else:
        files = sorted(p for p in Path(info.path).iterdir() if p.suffix in suffixes) if Path(info.path).is_dir() else []
    kinds = {suffixes.get(f.suffix) for f in files}
    if len(kinds) != 1 or None in kinds:
        found = ", ".join(f.name for f in files) or "none"
        raise StampflowError(f"model {info.name}@{info.version}: cannot tell how to serve it from its weights file "
                             f"({found}; expected one of {', '.join(suffixes)})")
    return kinds.pop()
