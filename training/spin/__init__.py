"""SDSS galaxy spin CNN: regress the MaNGA stellar spin parameter lambda_R from an SDSS colour stamp.

One package, one `FAMILY`: the network (`network`), the catalogue and image reader (`data`), the GalSim mock
writer (`mocks`), the replay reader (`archive`), the split and preprocessing (`prepare`), `train` and `evaluate`,
and the ``--set`` options (`options`). docs/spin.md describes the family.

Importing this package is cheap (no TensorFlow, no GalSim): those are imported by the functions that use them.
"""
from __future__ import annotations

from models.cnn import KerasCNN
from training.family import ArchiveFormat, Family
from training.spin import evaluate, train  # the modules: their functions run the commands
from training.spin.archive import DESCRIPTION, iter_spin_cutouts
from training.spin.data import read_spin_dir
from training.spin.network import FAMILY_NAME, build_model
from training.spin.options import SpinEvaluateOptions, SpinOptions

FAMILY = Family(
    name=FAMILY_NAME,
    summary="SDSS spin CNN: lambda_R from an SDSS colour stamp (JPEG/PNG + lambda_R CSV)",
    serving=KerasCNN,
    build=build_model,
    options=SpinOptions,
    evaluate_options=SpinEvaluateOptions,
    train=train.train,
    evaluate=evaluate.evaluate,
    readers={"sdss-spin": read_spin_dir},
    archives=(ArchiveFormat("sdss-spin", DESCRIPTION, iter_spin_cutouts),),
    mock_trained=True,
)
