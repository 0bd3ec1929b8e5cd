"""``stampflow train stargal --set key=value`` and ``stampflow evaluate stargal --set key=value`` options."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from models.base import NAN_FILLS
from models.preprocess import NORMALISATIONS
from training.family import Csv, FamilyOptions

Normalisation = Literal[NORMALISATIONS]  # type: ignore[valid-type]  # the serving path's normalisations
Optimizer = Literal["lbfgsb", "bayes", "bayes+lbfgsb"]
NanFill = Literal[NAN_FILLS]  # type: ignore[valid-type]  # models.preprocess.fill_nan_by


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
    stamp: Literal["science", "template"] = Field("science", description="Which alert stamp the model reads "
                                                   "(an archival cutout serves as either).")
    size: int = Field(20, ge=5, le=63, description="Centre crop of the stamp, pixels (odd sizes keep the alert's "
                                                  "centre pixel, 31 of 63, at the crop's centre).")
    alerts: Annotated[tuple[str, ...], Csv] = Field((), description="Alert files or directories whose confident "
                                                                   "PS1 references join the training set (labels "
                                                                   "only: the reference is never a feature).")
    cv_seed: int | None = Field(None, ge=0, description="Seed of the CV folds and the GP optimisation batches "
                                                         "(None: --seed); the hold-out split always follows --seed, "
                                                         "so CV seeds can be compared on the same hold-out part.")
    alert_folds: int = Field(5, ge=2, description="With alerts: object-grouped folds of the alert CV score.")
    alert_star_keep: float = Field(1.0, gt=0, le=1, description="With alerts: the seeded share of PS1-star alerts "
                                                                "that join the training set (CV folds and final "
                                                                "model; every alert is still scored). Alert "
                                                                "streams are ~95% stars, so in the alert domain the "
                                                                "GP's neighbours, and its answers, lean to star.")
    curated_psf_fwhm: Annotated[tuple[Annotated[float, Field(gt=0)], ...], Csv] = Field(
        (), max_length=2, description="With alerts: LOW,HIGH px. Each curated training cutout also joins the "
                                      "training set as a copy broadened to a seeded FWHM in this range "
                                      "(training.stargal.augment), the seeing of the alert templates; empty: none.")
    curated_native_fwhm: float = Field(1.8, gt=0, description="FWHM (px) of the curated cutouts' stars, what "
                                                              "curated_psf_fwhm broadens from (measured: "
                                                              "docs/stargal.md).")
    nan_fill: NanFill = Field("median", description="NaN rule of the crop, stored in the artifact: median (the "
                                                    "finite median) or core_max_ring_median (central 5x5: the "
                                                    "finite maximum, a masked saturated core; elsewhere: the "
                                                    "median of the outer 2-px ring, the sky).")
    symmetrise: bool = Field(False, description="Soft point-symmetric neighbour suppression before normalising: "
                                                "outside sym_radius, x = min(x, rot180(x) + sym_k_sigma * ring "
                                                "noise) (models.stargal_recipe).")
    sym_radius: float = Field(4.0, gt=0, description="symmetrise: pixels within this radius (px) of the centre "
                                                     "are kept as they are.")
    sym_k_sigma: float = Field(5.0, ge=0, description="symmetrise: how far (in ring-noise sigmas) a pixel may "
                                                      "exceed its point-mirrored partner.")
    hand_features_weight: float = Field(0.0, ge=0, description="Append a second-moment size and a concentration, "
                                                               "standardised and scaled to this weight x the std "
                                                               "of the first principal component; 0: none.")
    hand_size: Literal["fixed", "adaptive", "gauss"] = Field("fixed", description="Second-moment size: fixed 2-px "
                                                                       "Gaussian weight (one pass) or adaptive "
                                                                       "(weight iterated to the size, 6 passes), or gauss: "
                                                                       "the FWHM of a fitted Gaussian (from 2.3.0).")
    smoothness: float | None = Field(None, gt=0, description="Fix the Matern smoothness nu of the alert-CV and "
                                                             "final fits (None: nu = 0.5 in the CV, optimised in "
                                                             "the final fit as optimise_smoothness says).")
    calibrate: Literal["none", "temperature"] = Field("none", description="temperature: p_star = sigmoid(a * "
                                                      "(mu_star - mu_galaxy) / 2), a fitted by log-likelihood on "
                                                      "out-of-fold predictions of the curated training part "
                                                      "(CV folds shared with the alert folds); labels unchanged.")
    ood_quantile: float = Field(0.99, gt=0.5, lt=1, description="Out-of-distribution rule: flag a posterior "
                                                                "variance above this quantile of the training "
                                                                "set's leave-one-out variances.")
    trained_on_note: str | None = Field(None, description="Free text recorded in metadata.json (what this "
                                                          "version changed).")
    plots: bool = Field(True, description="Write the confusion-matrix, normalisation-comparison and reliability "
                                          "PNGs.")
    overwrite: bool = Field(False, description="Replace an existing artifact of the same version.")
    quiet: bool = Field(False, description="No progress bar and no progress lines on stderr.")


    @model_validator(mode="after")
    def _psf_range(self) -> "StargalOptions":
        r = self.curated_psf_fwhm
        if r and (len(r) != 2 or r[0] > r[1]):
            raise ValueError(f"curated_psf_fwhm is LOW,HIGH with LOW <= HIGH, not {','.join(map(str, r))}")
        return self

class StargalEvaluateOptions(FamilyOptions):
    """How ``stampflow evaluate`` scores a star/galaxy artifact."""

    batch_size: int = Field(256, ge=1, description="Cutouts per predict_batch call (the engine's batch size).")
    # --alerts only: the PS1 reference each packet carries, and where the pictures go.
    max_distance: float = Field(1.0, gt=0, description="--alerts: PS1 source within this many arcsec "
                                                       "(distpsnr1) for a reference label.")
    star_min: float = Field(0.9, ge=0, le=1, description="--alerts: sgscore1 above this is a reference star.")
    galaxy_max: float = Field(0.1, ge=0, le=1, description="--alerts: sgscore1 below this is a reference galaxy.")
    out_dir: str | None = Field("stargal-alerts-eval", description="--alerts: directory for the reliability "
                                                                   "diagram and the gallery PNGs; empty: none.")
    gallery: int = Field(12, ge=0, description="--alerts: how many worst disagreements the gallery shows.")

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "StargalEvaluateOptions":
        if self.galaxy_max >= self.star_min:
            raise ValueError("galaxy_max must be below star_min")
        return self
