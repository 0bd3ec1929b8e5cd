"""Which radio data set a path holds, and loading any of them (`load_radio`).

Formats (all real data, see docs/radio.md):

* Griese et al. (2023) FIRST data set (``griese``, `training.radio.griese`): one HDF5 file, one group per image
  with ``Img`` (300x300 uint8), ``Label_literature`` (FRI=0, FRII=1, Compact=2, Bent=3), ``Split_literature``
  (train/valid/test) and the alternative ``Label_CDL1``/``Split_CDL1``. Read from a ``.h5`` or straight from a
  ``.zip`` (the member is inflated into memory, not onto disk: h5py reads file-like objects, but seeking inside a
  deflated zip member re-inflates from the start, which makes h5py's random access ~10x slower). The groups carry
  no coordinates.
* FR-DEEP (Tang, Scaife & Leahy 2019) (``frdeep``, `training.radio.batches`): FIRST and NVSS images of the same
  600 FRI/FRII sources, 150x150 uint8, CIFAR-style pickled batches (11 training batches + 1 test batch of 50) in
  ``FIRST_PNG_dataset.tar.gz`` and ``NVSS_PNG_dataset.tar.gz`` (despite the names: pickles, no PNGs). Pixel
  scales: FIRST 1.8"/px and NVSS 15"/px (the data set's README: "FRDEEP-N: 15''/pixel"), i.e. the NVSS images
  span 37.5' and the sources sit small in the middle among field sources. The two subsets are shuffled
  independently: batch positions and file names do not pair FIRST with NVSS images of the same source.
* MiraBest (Porter & Scaife) batches (``mirabest``, `training.radio.batches`): 792 confident FRI (code 100) /
  FRII (200) sources, 150x150 uint8 FIRST images (1.8"/px), 8 training + 1 test CIFAR-style batches; the file
  names carry the class code and RA/Dec (``BestCat_proc/Cropped/100_159.613_+041.815.png``).
* FITS images (``radio-fits``, `training.radio.fits`): e.g. the MiraBest FITS subset (300x300 FIRST cutouts named
  ``{code}_{ra}_{dec}_{z}_{size}.fits``) or any survey image with a WCS: the whole image as one cutout, or stamps
  around a coordinate list (`training.survey_cutouts`; replay only, `training.radio.archive`).

Pickled batches are only ever read through `training.safe_unpickle` (numpy arrays and plain containers).
"""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import Sequence

from schemas.errors import StampflowError
from training.radio.batches import BATCH_RE, load_frdeep, load_mirabest
from training.radio.fits import load_mirabest_fits, parse_mirabest_fits_name
from training.radio.griese import load_griese
from training.radio.sets import DATASETS, RadioSet, existing_path, find_file


def detect_dataset(path: str | Path) -> str:
    """Which of `DATASETS` a path holds (by file names and archive contents, never by unpickling)."""
    p = existing_path(path, "radio data")
    name = p.name.lower()
    if p.is_file():
        if name.endswith((".h5", ".hdf5")) or (name.endswith(".zip") and zipfile.is_zipfile(p)):
            return "griese"
        if name.endswith((".fits", ".fit", ".fits.gz")):
            return "mirabest-fits" if parse_mirabest_fits_name(p.name) else "radio-fits"
        if tarfile.is_tarfile(p):
            if "nvss" in name:
                return "frdeep-nvss"
            if "first" in name:
                return "frdeep-first"
            return "mirabest"
        raise StampflowError(f"cannot tell which radio data set {p} is (griese .zip/.h5, FR-DEEP or MiraBest "
                             "tar.gz, FITS)")
    if find_file(p, ["*.h5", "*.hdf5", "galaxy_data*.zip"]):
        return "griese"
    if find_file(p, ["FIRST_PNG_dataset.tar.gz", "FIRST_PNG_dataset"]):
        return "frdeep-first"
    if find_file(p, ["NVSS_PNG_dataset.tar.gz", "NVSS_PNG_dataset"]):
        return "frdeep-nvss"
    if find_file(p, ["batches.tar.gz", "batches"]):
        return "mirabest"
    if any(BATCH_RE.search(f.name) for f in p.iterdir() if f.is_file()):
        up = name.upper()
        return "frdeep-nvss" if "NVSS" in up else "frdeep-first" if "FIRST" in up else "mirabest"
    fits_files = sorted(p.glob("*.fits"))
    if fits_files:
        return "mirabest-fits" if any(parse_mirabest_fits_name(f.name) for f in fits_files) else "radio-fits"
    raise StampflowError(f"no radio data set found in {p}")


def load_radio(path: str | Path, dataset: str | None = None, split: str | Sequence[str] | None = None, *,
               labels: str = "literature", limit: int | None = None, survey: str | None = None,
               size: int | None = None) -> RadioSet:
    """Load any supported data set; ``dataset`` overrides detection (see `DATASETS`).

    ``labels``/``limit``: Griese label set and first-N groups; ``survey``: FR-DEEP FIRST|NVSS; ``size``: MiraBest
    FITS centre crop.
    """
    ds = (dataset or detect_dataset(path)).lower()
    if ds == "griese":
        return load_griese(path, split=split, labels=labels, limit=limit)
    if ds in ("frdeep-first", "frdeep-nvss", "frdeep"):
        survey = survey or (ds.split("-")[1].upper() if "-" in ds else None)
        return load_frdeep(path, survey=survey, split=split)
    if ds == "mirabest":
        return load_mirabest(path, split=split)
    if ds == "mirabest-fits":
        return load_mirabest_fits(path, size=size).select(split)
    if ds == "radio-fits":
        raise StampflowError(f"{path} holds FITS images without labels (MiraBest-named files carry them); "
                             "use `stampflow replay --format radio-fits` to classify them")
    raise StampflowError(f"unknown radio data set '{ds}' (choose from {', '.join(DATASETS)})")
