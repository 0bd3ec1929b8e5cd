"""``stampflow train stargal --set key=value`` and ``stampflow evaluate stargal --set key=value`` options."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from models.preprocess import NORMALISATIONS
from training.family import Csv, FamilyOptions

Normalisation = Literal[NORMALISATIONS]  # type: ignore[valid-type]  # the serving path's normalisations
Optimizer = Literal["lbfgsb", "bayes", "bayes+lbfgsb"]


class StargalOptions(FamilyOptions):
    """Model selection and the GP fit; the defaults are what trained the bundled ``stargal@1.0.0``."""

    normalisations: Annotated[tuple[Normalisation, ...], Csv] = Field(
        NORMALISATIONS, min_length=1, description="Per-stamp normalisations compared in model selection.")
    pca_dims: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Csv] = Field(
        (0, 16, 40), min_length=1, description="Feature settings compared: PCA dimensions, 0 = all 400 pixels.")
    folds: int = Field(5, ge=2, description="Stratified cross-validation folds for model selection.")
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="Seeded stratified hold-out part, scored once "
                                                                 "at the end.")
    nn_count: int = Field(30, ge=1, description="Nearest neighbours per prediction (the local GP's size).")
    kernel: Literal["matern", "rbf"] = Field("matern", description="GP kernel: matern (smoothness nu) or rbf.")
    batch_count: int = Field(400, ge=1, description="Class-balanced batch for the leave-one-out objective.")
    selection_optimizer: Optimizer = Field("lbfgsb", description="Hyperparameter optimiser of the selection fits "
                                                                 "(MuyGPyS L_BFGS_B / Bayes_optimize).")
    final_optimizer: Optimizer = Field("bayes+lbfgsb", description="Hyperparameter optimiser of the final fit.")
    init_points: int = Field(5, ge=1, description="Bayesian optimisation: random starting points (final fit).")
    n_iter: int = Field(20, ge=1, description="Bayesian optimisation: iterations (final fit).")
    optimise_smoothness: bool = Field(True, description="Final Matern fit also optimises the smoothness nu "
                                                        "(selection keeps nu = 0.5).")
    max_per_class: int | None = Field(None, ge=1, description="Train on a seeded random subset of this many "
                                                              "cutouts per class (quick runs, tests).")
    plots: bool = Field(True, description="Write the confusion-matrix and normalisation-comparison PNGs.")
    overwrite: bool = Field(False, description="Replace an existing artifact of the same version.")
    quiet: bool = Field(False, description="No progress bar and no progress lines on stderr.")


class StargalEvaluateOptions(FamilyOptions):
    """How ``stampflow evaluate`` scores a star/galaxy artifact."""

    batch_size: int = Field(256, ge=1, description="Cutouts per predict_batch call (the engine's batch size).")
