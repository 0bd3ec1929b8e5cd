"""The morphology family's ``--set key=value`` options: training, evaluation and replay, each a typed model.

Key names and defaults are the ones documented in docs/morphology.md; a wrong key or value is one clear line
(`training.family.parse_options`).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from training.family import FamilyOptions
from training.morphology.network import INPUT_SIZE

# "CANDELS" and "candels" name the same data set (the label files are upper-case, the option lower-case).
Dataset = Annotated[Literal["candels", "clash"], BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)]


class MorphologyOptions(FamilyOptions):
    """``stampflow train morphology --set ...``."""

    dataset: Dataset | None = Field(None, description="candels or clash; None: told by the label file's IDs")
    filters: str = Field("all", description="CLASH filters as channels: all, uv, optical, nir or a list such as "
                                            "f435w,f160w (one filter: a single-band model); CANDELS is F160W")
    study: Literal["transfer"] | None = Field(None, description="transfer (CLASH, needs --from): from scratch vs "
                                              "transferred, pooled vs per filter vs combined, on one budget")
    loss: Literal["crossentropy", "mse"] = Field("crossentropy", description="Soft-target cross-entropy against "
                                                 "the vote fractions, or their squared error (the paper's RMSE)")
    patience: int | None = Field(None, ge=0, description="Early stopping on the validation loss after this many "
                                 "epochs without improvement; 0: fixed epochs; None: 5 on CANDELS, 6 on CLASH")
    size: int = Field(INPUT_SIZE, ge=8, description="Input side in pixels (stamps are resized whole); with --from, "
                                                    "the source model's")
    limit: int | None = Field(None, ge=0, description="Only the first N label rows (smoke runs); None: all")
    name: str | None = Field(None, description="Artifact name; None: morphology-candels, morphology-clash or "
                                               "morphology-clash-<filter>")


class MorphologyEvaluateOptions(FamilyOptions):
    """``stampflow evaluate MODEL --set ...`` for a morphology artifact."""

    split: Literal["test", "validation", "all"] | None = Field(None, description="The artifact's own held-out IDs "
                                                               "(test, validation) or every row (all); None: test "
                                                               "when the data hold them, else all")
    dataset: Dataset | None = Field(None, description="candels or clash; None: told by the label file's IDs")
    limit: int | None = Field(None, ge=0, description="Only the first N label rows; None: all")
    batch_size: int = Field(256, ge=1, description="Stamps per predict_batch call")


class MorphologyReplayOptions(FamilyOptions):
    """``stampflow replay --format candels|clash --set ...`` (the format fixes ``dataset``)."""

    dataset: Dataset | None = Field(None, description="candels or clash; set by the --format")
    bands: Literal["galaxy", "row"] = Field("galaxy", description="CLASH: every filter the galaxy has a stamp in "
                                                                  "(galaxy) or only the labelled one (row)")
    unlabelled: bool = Field(False, description="Also replay the stamps that have no label row (without truth)")
