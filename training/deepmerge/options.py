"""DeepMerge's ``--set key=value`` options: training, evaluation and replay, each a typed model.

Key names and defaults are the ones documented in docs/deepmerge.md; a wrong key or value is one clear line
(`training.family.parse_options`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from training.family import FamilyOptions, Fractions

Variant = Literal["pristine", "noisy"]


class HlspChoice(FamilyOptions):
    """Which HLSP file of a directory to read (a file path given as the data is read as it is)."""

    variant: Variant | None = Field(None, description="pristine (PSF only) or noisy (PSF + sky noise); None: the "
                                                      "one in the directory, else from the file name or header")
    filters: int | None = Field(None, description="Filter set: 2 (F814W, F160W) or 3 (+ F356W); None: any")
    format: Literal["fits", "npy"] | None = Field(None, description="Read the FITS file or the -x.npy/-y.npy pair; "
                                                                    "None: FITS first, it carries its own labels")
    metadata: Path | None = Field(None, description="Directory of the deepmerge-public label metadata "
                                                    "(subsamples_ID.npy ...); None: <data root>/deepmerge_metadata")


class DeepMergeOptions(HlspChoice):
    """``stampflow train deepmerge --set ...``."""

    fractions: Fractions = Field((0.7, 0.1, 0.2), description="Train, validation and test parts: the paper's "
                                                              "70/10/20")
    split: Literal["stratified", "subhalo"] = Field("stratified", description="stratified: rows, by label; "
                                                    "subhalo: whole Illustris subhaloes (their 4 cameras and 4 "
                                                    "flipped/rotated copies) on one side")
    max_images: int | None = Field(None, ge=0, description="A seeded, class-balanced subset of each part of about "
                                                           "this many images in all (quick runs); None/0: all")
    # The paper's 0.5 dropout sits before the next block's BatchNorm: training-mode activations then have another
    # mean and variance than inference-mode ones (Li et al. 2019), and in runs of a few hundred steps the
    # inference outputs collapsed to one class (validation stuck at the class fraction). 0.2 trains and validates
    # consistently; --set dropout=0.5 restores the paper's rate.
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout after each convolution block (the paper: 0.5)")
    dense_activation: str = Field("relu", description="Activation of the two hidden dense layers (the notebook: "
                                                      "softmax)")
    patience: int = Field(8, ge=0, description="Early stopping on the validation loss after this many epochs "
                                               "without improvement; 0: run every epoch")
    name: str | None = Field(None, description="Artifact name; None: deepmerge or deepmerge-noisy by variant")
    quiet: bool = Field(False, description="No progress lines on stderr")


class DeepMergeEvaluateOptions(HlspChoice):
    """``stampflow evaluate deepmerge[-noisy] --set ...``."""

    part: Literal["all", "test"] = Field("all", description="all rows, or only those the artifact held out (its "
                                                            "recorded split, recomputed on the same file)")
    limit: int | None = Field(None, ge=0, description="Score only the first N rows of the part; None: all")
    threshold: float = Field(0.5, ge=0, le=1, description="P(merger) at or above which a stamp counts as a merger")


class DeepMergeReplayOptions(FamilyOptions):
    """``stampflow replay --format deepmerge --set ...``: which file, which rows, and a tag."""

    variant: Variant | None = Field(None, description="pristine or noisy: picks the file in a directory")
    filters: int | None = Field(None, description="2 or 3 filters: picks the file in a directory")
    format: Literal["fits", "npy"] | None = Field(None, description="FITS or the .npy pair: picks the file")
    start: int = Field(0, ge=0, description="First row to replay")
    limit: int | None = Field(None, ge=0, description="At most this many rows from start; None: to the end")
    split: str | None = Field(None, description="A tag written into every cutout's split field")
