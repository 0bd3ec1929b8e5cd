"""``stampflow train FAMILY`` / ``stampflow evaluate MODEL``: one module per family, imported only when used
(so the command line starts without TensorFlow)."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from schemas.errors import StampflowError
from training.cnn import TrainOptions

FAMILIES: dict[str, str] = {
    "stargal": "training.stargal",
    "radio": "training.radio",
    "deepmerge": "training.deepmerge",
    "morphology": "training.morphology",
    "spin": "training.spin",
}


def family_module(family: str) -> ModuleType:
    target = FAMILIES.get(family)
    if target is None:
        raise StampflowError(f"unknown model family '{family}' (known: {', '.join(FAMILIES)})")
    return importlib.import_module(target)


def train(family: str, opts: TrainOptions) -> dict[str, Any]:
    if not Path(opts.data).exists():
        raise StampflowError(f"training data {opts.data} does not exist")
    module = family_module(family)
    if family == "stargal":  # the GP family predates TrainOptions; its own options are the seed and version
        kwargs: dict[str, Any] = {"seed": opts.seed}
        if opts.out_root:
            kwargs["out_root"] = Path(opts.out_root)
        if opts.version:
            kwargs["version"] = opts.version
        return module.train(Path(opts.data), **kwargs)
    return module.train(opts)


def evaluate(model: str, data: Path, options: dict[str, str], roots: Sequence[Path] = ()) -> dict[str, Any]:
    from models.registry import Registry

    if not Path(data).exists():
        raise StampflowError(f"evaluation data {data} does not exist")
    info = Registry(list(roots)).resolve(model)
    module = family_module(info.family)
    if info.family == "stargal":
        return module.evaluate(str(info.path), Path(data))
    return module.evaluate(str(info.path), Path(data), dict(options))
