"""``stampflow replay --format ztf-stargal``: the star/galaxy cutouts as cutout packets.

Their truth labels let a replay score the star/galaxy GP live, on the same stamps alerts carry.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator

from models.base import ZTF_PIXEL_SCALE
from schemas.cutout_packet import Cutout
from schemas.errors import StampflowError
from schemas.stamps import read_fits_file
from training.stargal.data import STARGAL_RE, stargal_files


def iter_ztf_stargal_cutouts(path: Path, **options: Any) -> Iterator[Cutout]:
    """The ZTF star/galaxy cutouts (20x20 i-band science, label in the file name), de-duplicated, as packets."""
    if options:
        raise StampflowError(f"ztf-stargal takes no options (got {', '.join(options)})")
    root = Path(path)
    files = [p for _, _, p in stargal_files(root)] if root.is_dir() else [root]
    seen: set[str] = set()
    for f in files:
        m = STARGAL_RE.match(f.name)
        if m is None:
            raise StampflowError(f"{f} is not a star_N.fits / galaxy_N.fits cutout")
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest in seen:  # the set has byte-identical duplicates; one packet each
            continue
        seen.add(digest)
        yield Cutout(id=f.stem, survey="ZTF", instrument="ZTF camera", bands=["i"],
                     images={"i": read_fits_file(f)}, pixel_scale=ZTF_PIXEL_SCALE, truth_label=m.group(1),
                     truth_source="Legacy Survey DR9 morphological type", dataset="ztf-stargal",
                     extra={"file": f.name})
