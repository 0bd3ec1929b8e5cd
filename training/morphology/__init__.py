"""CANDELS -> CLASH galaxy morphology: five vote fractions per HST stamp (Pérez-Carrasco et al. 2019).

One package, one `FAMILY`: the network (`network`), the label CSVs (`labels`), the stamps (`stamps`), model-ready
arrays and the split (`dataset`), the GalSim mocks (`mocks`) and their files (`mock_files`; ``python -m
training.morphology mock``), the replay reader (`archive`), scores (`metrics`), the training recipe (`recipe`),
`train`, the transfer `study` and `evaluate`, and the ``--set`` options (`options`). docs/morphology.md
describes the family.

Importing this package is cheap (no TensorFlow, no GalSim): those are imported by the functions that use them.
"""
from __future__ import annotations

from functools import partial

from models.cnn import KerasCNN
from training.family import ArchiveFormat, Family
from training.morphology import evaluate, train  # the modules: their functions run the commands
from training.morphology.archive import CANDELS_DESCRIPTION, CLASH_DESCRIPTION, iter_morphology_cutouts
from training.morphology.dataset import load_morphology
from training.morphology.network import FAMILY_NAME, build_model
from training.morphology.options import MorphologyEvaluateOptions, MorphologyOptions

FAMILY = Family(
    name=FAMILY_NAME,
    summary="CANDELS -> CLASH morphology CNN: five vote fractions per HST stamp (label CSV + <ID>.fits stamps)",
    serving=KerasCNN,
    build=build_model,
    options=MorphologyOptions,
    evaluate_options=MorphologyEvaluateOptions,
    train=train.train,
    evaluate=evaluate.evaluate,
    readers={"candels": partial(load_morphology, dataset="candels"),
             "clash": partial(load_morphology, dataset="clash")},
    archives=(ArchiveFormat("candels", CANDELS_DESCRIPTION, iter_morphology_cutouts, {"dataset": "candels"}),
              ArchiveFormat("clash", CLASH_DESCRIPTION, iter_morphology_cutouts, {"dataset": "clash"})),
    mock_trained=True,
)
