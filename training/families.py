"""THE registry of model families: ``stampflow train / evaluate / replay --format`` find every family here.

Adding a family is one package under ``training/`` whose ``__init__`` defines ``FAMILY = Family(...)``, plus one
line in `FAMILIES` (docs/families.md walks through it). Family packages import no TensorFlow, GalSim or MuyGPyS
at import time, so importing this registry stays cheap (the command line imports it only inside the commands
that need it; a serving worker never does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from schemas.cutout_packet import Cutout
from schemas.errors import StampflowError
from training.deepmerge import FAMILY as DEEPMERGE
from training.family import ArchiveFormat, Family, TrainOptions
from training.morphology import FAMILY as MORPHOLOGY
from training.radio import FAMILY as RADIO
from training.spin import FAMILY as SPIN
from training.stargal import FAMILY as STARGAL

FAMILIES: tuple[Family, ...] = (
    STARGAL,
    RADIO,
    DEEPMERGE,
    MORPHOLOGY,
    SPIN,
)


def family(name: str) -> Family:
    """The family called ``name`` (``stampflow train NAME``, an artifact's metadata "family")."""
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise StampflowError(f"unknown model family '{name}' (known: {', '.join(f.name for f in FAMILIES)})")


def archive_formats() -> dict[str, ArchiveFormat]:
    """Every family's replay formats by ``--format`` name, in registry order."""
    formats: dict[str, ArchiveFormat] = {}
    for fam in FAMILIES:
        for fmt in fam.archives:
            if fmt.name in formats:  # two families claiming one name is a programming error, caught by the tests
                raise RuntimeError(f"archive format '{fmt.name}' is declared twice")
            formats[fmt.name] = fmt
    return formats


def archive_format(name: str) -> ArchiveFormat:
    formats = archive_formats()
    if name not in formats:
        raise StampflowError(f"unknown archive format '{name}' (known: {', '.join(formats)})")
    return formats[name]


def iter_archive(fmt: str, paths: Sequence[Path], options: Mapping[str, Any] | None = None,
                 limit: int | None = None) -> Iterator[Cutout]:
    """Every cutout of every path in one archive format, in order; at most ``limit``."""
    reader = archive_format(fmt)
    n = 0
    for path in paths:
        if not Path(path).exists():
            raise StampflowError(f"{path} does not exist")
        for cutout in reader.read(Path(path), **dict(options or {})):
            if limit is not None and n >= limit:
                return
            yield cutout
            n += 1


def train(name: str, opts: TrainOptions, pairs: Mapping[str, str]) -> dict[str, Any]:
    """``stampflow train NAME``: the family's ``--set`` options validated first, then its training run."""
    if not Path(opts.data).exists():
        raise StampflowError(f"training data {opts.data} does not exist")
    fam = family(name)
    return fam.train(opts, fam.parse(pairs))


def evaluate(model: str, data: Path | None, pairs: Mapping[str, str], roots: Sequence[Path] = (),
             alerts: Sequence[Path] | None = None) -> dict[str, Any]:
    """``stampflow evaluate MODEL``: the registry resolves the artifact, its metadata "family" picks the family.

    ``data``: the family's labelled data set. ``alerts``: real alert files, scored against the reference the
    packets carry (only families with ``evaluate_alerts``).
    """
    from models.registry import Registry

    if (data is None) == (not alerts):
        raise StampflowError("evaluate needs exactly one of --data or --alerts")
    for path in ([data] if data is not None else list(alerts or [])):
        if not Path(path).exists():
            raise StampflowError(f"evaluation data {path} does not exist")
    info = Registry(list(roots)).resolve(model)
    fam = family(info.family)
    options = fam.parse_evaluate(pairs)
    if alerts:
        if fam.evaluate_alerts is None:
            raise StampflowError(f"family '{fam.name}' has no evaluation on alerts (use --data)")
        return fam.evaluate_alerts(info, [Path(p) for p in alerts], options)
    return fam.evaluate(info, Path(data), options)
