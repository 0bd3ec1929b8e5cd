"""Archival cutout sets as streams: ``stampflow replay PATH --format FMT`` turns each published format into
cutout packets (schemas/cutout_packet) on a topic or in a file.

Each format's reader lives with its family's loaders (`training/<family>_data.py`) and yields
`schemas.cutout_packet.Cutout`; this module only names them. Readers are imported when used.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Iterator

from models.base import ZTF_PIXEL_SCALE
from schemas.cutout_packet import Cutout
from schemas.errors import StampflowError

# format -> ("module:function", fixed options, description)
READERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "griese": ("training.radio_data:iter_griese_cutouts", {},
               "Griese et al. FIRST radio galaxies: HDF5, zipped or not (FRI/FRII/Compact/Bent)"),
    "frdeep": ("training.radio_data:iter_frdeep_cutouts", {},
               "FR-DEEP FIRST or NVSS batches (--set survey=FIRST|NVSS)"),
    "mirabest": ("training.radio_data:iter_mirabest_cutouts", {}, "MiraBest FRI/FRII batches"),
    "radio-fits": ("training.radio_data:iter_radio_fits_cutouts", {},
                   "FIRST FITS images (MiraBest FITS subset, survey images with --set coords=FILE)"),
    "deepmerge": ("training.deepmerge_data:iter_deepmerge_cutouts", {},
                  "DeepMerge HLSP FITS (MergerLabels table) or -x.npy/-y.npy pairs"),
    "candels": ("training.morphology_data:iter_morphology_cutouts", {"dataset": "candels"},
                "CANDELS F160W stamps + CANDELS_labels.csv vote fractions"),
    "clash": ("training.morphology_data:iter_morphology_cutouts", {"dataset": "clash"},
              "CLASH stamps + CLASH_labels.csv vote fractions"),
    "sdss-spin": ("training.spin_data:iter_spin_cutouts", {}, "SDSS RGB JPEG/PNG stamps + lambda_R CSV"),
    "ztf-stargal": ("training.archives:iter_ztf_stargal_cutouts", {},
                    "ZTF star/galaxy cutouts star_N.fits / galaxy_N.fits (label in the name)"),
}


def reader(fmt: str) -> Callable[..., Iterator[Cutout]]:
    entry = READERS.get(fmt)
    if entry is None:
        raise StampflowError(f"unknown archive format '{fmt}' (known: {', '.join(READERS)})")
    target, fixed, _ = entry
    module_name, _, func = target.partition(":")
    fn = getattr(importlib.import_module(module_name), func)

    def call(path: Path, **options: Any) -> Iterator[Cutout]:
        return fn(Path(path), **{**options, **fixed})

    return call


def iter_archive(fmt: str, paths: list[Path], options: dict[str, Any] | None = None,
                 limit: int | None = None) -> Iterator[Cutout]:
    """Every cutout of every path, in order; at most ``limit``."""
    read = reader(fmt)
    n = 0
    for path in paths:
        if not Path(path).exists():
            raise StampflowError(f"{path} does not exist")
        for cutout in read(Path(path), **(options or {})):
            if limit is not None and n >= limit:
                return
            yield cutout
            n += 1


def iter_ztf_stargal_cutouts(path: Path, **options: Any) -> Iterator[Cutout]:
    """The ZTF star/galaxy cutouts (20x20 i-band science, label in the file name), de-duplicated, as packets.

    Their truth labels let a replay score the star/galaxy GP live, on the same stamps alerts carry.
    """
    import hashlib

    from models.preprocess import _STARGAL_RE, read_fits_image

    if options:
        raise StampflowError(f"ztf-stargal takes no options (got {', '.join(options)})")
    root = Path(path)
    files = sorted((p for p in root.iterdir() if _STARGAL_RE.match(p.name)),
                   key=lambda p: (not p.name.startswith("star"), int(_STARGAL_RE.match(p.name).group(2)))) \
        if root.is_dir() else [root]
    seen: set[str] = set()
    for f in files:
        m = _STARGAL_RE.match(f.name)
        if m is None:
            raise StampflowError(f"{f} is not a star_N.fits / galaxy_N.fits cutout")
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest in seen:  # the set has byte-identical duplicates; one packet each
            continue
        seen.add(digest)
        yield Cutout(id=f.stem, survey="ZTF", instrument="ZTF camera", bands=["i"],
                     images={"i": read_fits_image(f)}, pixel_scale=ZTF_PIXEL_SCALE, truth_label=m.group(1),
                     truth_source="Legacy Survey DR9 morphological type", dataset="ztf-stargal",
                     extra={"file": f.name})
