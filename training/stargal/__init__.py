"""The star/galaxy family: a MuyGPs local Gaussian process over ZTF stamps (`models.stargal`; 2.x: 19x19 templates).

Modules: `data` (the labelled FITS cutouts), `archive` (their replay format), `options` (``--set`` options),
`gp` (the training-side GP classifier), `reference` and `alerts` (scoring on real alerts against PS1), `selection` (normalisation x feature model selection), `artifact`
(weights, metadata, atomic write), `train` and `evaluate`.
"""
from __future__ import annotations

from models.stargal import StarGalaxyGP
from training.family import ArchiveFormat, Family
from training.stargal.alerts import evaluate_alerts
from training.stargal.archive import iter_ztf_stargal_cutouts
from training.stargal.data import load_stargal_dir
from training.stargal.evaluate import evaluate
from training.stargal.gp import GPClassifier
from training.stargal.options import StargalEvaluateOptions, StargalOptions
from training.stargal.train import train

FAMILY = Family(
    name="stargal",
    summary="ZTF star/galaxy: MuyGPs Gaussian process on stamp pixels (2.x: 19x19 template, alert-trained)",
    serving=StarGalaxyGP,
    build=GPClassifier,
    options=StargalOptions,
    train=train,
    evaluate=evaluate,
    readers={"ztf-stargal": load_stargal_dir},
    archives=(ArchiveFormat("ztf-stargal", "ZTF star/galaxy cutouts star_N.fits / galaxy_N.fits (label in the name)",
                            iter_ztf_stargal_cutouts),),
    evaluate_options=StargalEvaluateOptions,
    evaluate_alerts=evaluate_alerts,
)
