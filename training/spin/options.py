"""The spin family's ``--set key=value`` options: training, evaluation and replay, each a typed model.

Key names and defaults are the ones documented in docs/spin.md; a wrong key or value is one clear line
(`training.family.parse_options`).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from training.family import FamilyOptions, Fractions


class SpinOptions(FamilyOptions):
    """``stampflow train spin --set ...``."""

    catalogue: str | None = Field(None, description="The lambda_R CSV (a path, or a name inside the data "
                                                    "directory); None: the directory's one *.csv")
    fractions: Fractions = Field((0.7, 0.15, 0.15), description="Train, validation and test parts (sdss_CNN's "
                                                                "70/15/15), stratified by lambda_R quintiles")
    max_images: int | None = Field(None, ge=0, description="A seeded subset of each part of about this many "
                                                           "images in all (quick runs); None/0: all")
    arch: Literal["bundled", "seed"] = Field("bundled", description="bundled: the CPU-sized network "
                                             "(`BUNDLED_CONFIG`); seed: the exact 5,994,145-parameter sdss_CNN")
    # Single settings on top of the chosen architecture (None: the architecture's own value).
    width: float | None = Field(None, gt=0, description="Multiplies every convolution's filter count")
    head: Literal["flatten", "gap"] | None = Field(None, description="flatten (the seed) or global average pooling")
    first_stride: int | None = Field(None, ge=1, le=2, description="Stride of the first convolution: 1 or 2")
    conv_dropout: float | None = Field(None, ge=0, lt=1, description="One dropout rate after every convolution "
                                                                     "instead of the seed's 0.5/0.25")
    patience: int = Field(10, ge=0, description="Early stopping on the validation loss after this many epochs "
                                                "without improvement; 0: run every epoch")
    name: str | None = Field(None, description="Artifact name; None: spin")
    quiet: bool = Field(False, description="No progress lines on stderr")


class SpinEvaluateOptions(FamilyOptions):
    """``stampflow evaluate spin --set ...``."""

    catalogue: str | None = Field(None, description="The lambda_R CSV; None: the directory's one *.csv")
    limit: int | None = Field(None, ge=0, description="Only the first N catalogue rows; None/0: all")
    part: Literal["all", "test"] = Field("all", description="all rows, or only those the artifact held out (its "
                                                            "recorded split, recomputed on the same catalogue)")


class SpinReplayOptions(FamilyOptions):
    """``stampflow replay --format sdss-spin --set ...``."""

    catalogue: str | None = Field(None, description="The lambda_R CSV; None: the directory's one *.csv")
    limit: int | None = Field(None, ge=0, description="At most the first N catalogue rows; None: all")
    split: str | None = Field(None, description="A tag written into every cutout's split field")
