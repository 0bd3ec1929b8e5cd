"""The radio-galaxy family: FIRST (and, by transfer, NVSS) CNNs for FRI / FRII / Compact / Bent, served by
`models.cnn.KerasCNN` from the artifact's metadata.

Modules: `network` (architecture and its constants), `sets` (`RadioSet`, survey constants), `griese`, `batches`
and `fits` (the published formats), `data` (detection and `load_radio`), `archive` (replay formats), `options`
(``--set`` options), `train`, `evaluate`, `transfer` (the FIRST -> NVSS experiment); radio-first 2.0.0:
`pool` (every FIRST image, label mapping, dedup), `dedup` (hashes, NCC, positions), `ensemble` (one network,
dihedral average, the served graph), `train_pool` (``--set pool=true``).
"""
from __future__ import annotations

from models.cnn import KerasCNN
from training.family import ArchiveFormat, Family
from training.radio.archive import (iter_frdeep_cutouts, iter_griese_cutouts, iter_mirabest_cutouts,
                                    iter_radio_fits_cutouts)
from training.radio.batches import load_frdeep, load_mirabest
from training.radio.data import load_radio
from training.radio.evaluate import evaluate
from training.radio.fits import load_mirabest_fits
from training.radio.griese import load_griese
from training.radio.network import build_model
from training.radio.options import RadioEvaluateOptions, RadioOptions
from training.radio.train import train

FAMILY = Family(
    name="radio",
    summary="radio galaxies (FIRST/NVSS): FRI, FRII, Compact, Bent CNN",
    serving=KerasCNN,
    build=build_model,
    options=RadioOptions,
    train=train,
    evaluate=evaluate,
    readers={"griese": load_griese, "frdeep": load_frdeep, "mirabest": load_mirabest,
             "mirabest-fits": load_mirabest_fits, "any": load_radio},
    archives=(
        ArchiveFormat("griese", "Griese et al. FIRST radio galaxies: HDF5, zipped or not (FRI/FRII/Compact/Bent)",
                      iter_griese_cutouts),
        ArchiveFormat("frdeep", "FR-DEEP FIRST or NVSS batches (--set survey=FIRST|NVSS)", iter_frdeep_cutouts),
        ArchiveFormat("mirabest", "MiraBest FRI/FRII batches", iter_mirabest_cutouts),
        ArchiveFormat("radio-fits", "FIRST FITS images (MiraBest FITS subset, survey images with --set coords=FILE)",
                      iter_radio_fits_cutouts),
    ),
    evaluate_options=RadioEvaluateOptions,
)
