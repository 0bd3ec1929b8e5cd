"""``stampflow replay --format sdss-spin``: SDSS colour stamps + a lambda_R catalogue as cutout packets."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from schemas.cutout_packet import Cutout
from training.family import parse_options
from training.spin.data import read_catalogue, read_rgb
from training.spin.network import CHANNELS, FAMILY_NAME
from training.spin.options import SpinReplayOptions

DESCRIPTION = "SDSS RGB JPEG/PNG stamps + lambda_R CSV"


def iter_spin_cutouts(path: str | Path, **options: Any) -> Iterator[Cutout]:
    """One `Cutout` per catalogue row: survey SDSS, bands i, r, g (the image's R, G, B) as 0..255 float32,
    pixel scale None (stamps are cut at a multiple of R_e), truth {"lambda_R": value}.

    Options (`SpinReplayOptions`): ``catalogue`` (CSV file), ``limit``, ``split`` (tag).
    """
    o = parse_options(SpinReplayOptions, options, family=FAMILY_NAME, command="replay")
    rows, _, cat, _ = read_catalogue(Path(path), o.catalogue)
    if o.limit is not None:
        rows = rows[:o.limit]
    mock = (cat.parent / "mock_description.json").is_file()
    for r in rows:
        rgb = read_rgb(r["file"]).astype(np.float32)
        yield Cutout(id=r["id"], survey="SDSS", instrument="SDSS imaging (colour JPEG)", bands=list(CHANNELS),
                     images={b: np.ascontiguousarray(rgb[:, :, k]) for k, b in enumerate(CHANNELS)},
                     pixel_scale=None, truth_values={"lambda_R": float(r["lambda_R"])},
                     truth_source=("mock " if mock else "") + f"{cat.name}",
                     dataset="sdss-spin-mock" if mock else "sdss-spin", split=o.split,
                     extra={"file": str(Path(r["file"]).name)})
