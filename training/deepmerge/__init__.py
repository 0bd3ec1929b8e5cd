"""DeepMerge: merger / non-merger CNN for z=2 Illustris HST-like stamps (Ćiprijanović et al. 2020).

One package, one `FAMILY`: the network (`network`), the HLSP readers (`hlsp`), the GalSim mock writer (`mocks`),
the replay reader (`archive`), the split and preprocessing (`prepare`), scores (`metrics`), `train` and
`evaluate`, and the ``--set`` options (`options`). docs/deepmerge.md describes the family.

Importing this package is cheap (no TensorFlow, no GalSim): those are imported by the functions that use them.
"""
from __future__ import annotations

from models.cnn import KerasCNN
from training.deepmerge import evaluate, train  # the modules: their functions run the commands
from training.deepmerge.archive import DESCRIPTION, iter_deepmerge_cutouts
from training.deepmerge.hlsp import read_hlsp
from training.deepmerge.network import FAMILY_NAME, build_model
from training.deepmerge.options import DeepMergeEvaluateOptions, DeepMergeOptions
from training.family import ArchiveFormat, Family

FAMILY = Family(
    name=FAMILY_NAME,
    summary="DeepMerge merger / non-merger CNN on HST-like z=2 stamps (HLSP FITS or .npy)",
    serving=KerasCNN,
    build=build_model,
    options=DeepMergeOptions,
    evaluate_options=DeepMergeEvaluateOptions,
    train=train.train,
    evaluate=evaluate.evaluate,
    readers={"hlsp": read_hlsp},
    archives=(ArchiveFormat("deepmerge", DESCRIPTION, iter_deepmerge_cutouts),),
    mock_trained=True,
)
