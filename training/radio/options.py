"""``stampflow train radio --set key=value`` and ``stampflow evaluate <radio model> --set key=value`` options."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from training.family import FamilyOptions

DEFAULT_PATIENCE = 25


class RadioOptions(FamilyOptions):
    """Training options; the defaults are what trained the bundled ``radio-first`` 1.0.0 (``pool=false``) and, with
    ``pool=true`` and ``--epochs`` left at the pool's default (80), the second 2.0.0 candidate (docs/radio.md;
    measured, not shipped: 0.840 on Griese valid against 1.0.0's 0.845)."""

    dataset: str | None = Field(None, description="griese, frdeep-first, frdeep-nvss or mirabest (frdeep = "
                                                  "frdeep-first); None: detected from the data path.")
    name: str | None = Field(None, description="Artifact name; None: radio-first, radio-frdeep-first, "
                                               "radio-frdeep-nvss or radio-mirabest by data set.")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="Seeded stratified validation part carved out of "
                                                              "the published training part.")
    patience: int = Field(DEFAULT_PATIENCE, ge=0, description="Early stopping on the validation accuracy (best "
                                                              "epoch restored); 0 = fixed epochs.")
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="Class weights: balanced (the Griese test part is balanced, its training part "
                                "is not) or none.")
    labels: Literal["literature", "CDL1"] = Field("literature", description="Griese label set and split.")
    limit: int | None = Field(None, ge=1, description="Griese: read only the first N groups (smoke runs).")
    throughput: bool = Field(True, description="Time the served network at batch 256 into the metrics.")
    pool: bool = Field(False, description="Griese only: train on every FIRST image (Griese train + MiraBest + "
                                          "FR-DEEP FIRST, deduplicated; training.radio.pool) with fixed epochs, "
                                          "the radio-first 2.0.0 recipe.")
    members: int = Field(1, ge=1, le=8, description="pool: networks averaged in the served graph (seeds seed, "
                                                    "seed+1, ...).")
    augment: Literal["dihedral", "rotate"] = Field("rotate", description="pool: the 8 dihedral symmetries "
                                                                          "(exact) or any-angle rotation + flips.")
    extra: bool = Field(False, description="pool: train on MiraBest and FR-DEEP FIRST too; false: Griese train "
                                           "only (still guarded by the pool's dedup; radio-first 2.0.0 is this "
                                           "arm).")
    cdl1: bool = Field(False, description="pool: train on Label_CDL1 (Bent split in two groups), folded back to "
                                          "the four classes in the served graph.")
    mirabest: str | None = Field(None, description="pool: MiraBest batches; None: $STAMPFLOW_DATA/radio/"
                                                   "mirabest/batches.tar.gz.")
    frdeep: str | None = Field(None, description="pool: FR-DEEP FIRST batches; None: $STAMPFLOW_DATA/radio/"
                                                 "frdeep/FIRST_PNG_dataset.tar.gz.")
    dedup_ncc: float = Field(0.99, gt=0, le=1, description="pool: near-duplicate threshold (NCC).")
    guard: Literal["pixels", "ncc"] = Field(
        "pixels", description="pool: the valid guard. ncc: drop every image within dedup_ncc of a valid image "
                              "(the first 2.0.0 candidate); pixels: also keep a Griese train image whose pixels "
                              "differ from each such valid image by >= 10 grey levels (training.radio.pool).")
    pool_cache: str | None = Field(None, description="pool: directory of a saved pool (save_pool_cache); built "
                                                     "and saved there when absent.")
    members_from: str | None = Field(None, description="pool: comma list of member networks (.keras) already "
                                                       "trained by training.radio.ensemble.train_network on this "
                                                       "pool (bench/radio_ablation.py runs): assembled and recorded "
                                                       "instead of trained again.")
    arch: Literal["v1", "deep", "patch", "patch_deep", "s2d_deep", "s2d_lean", "s2d_narrow", "v1_rings"] = Field(
        "deep", description="pool: the network (training.radio.train_pool.ARCHS). v1: 1.0.0's (16, 32, 64, 64); "
                            "deep: (16, 24, 48, 96) and a second 96-channel 3x3 convolution on the 9x9 grid; patch: "
                            "v1 with a 4x4 stride-4 stem; patch_deep: deep with that stem; s2d_*: a 4x4 "
                            "space-to-depth stem and a 3x3 convolution (training.radio.network.STEMS), with deep's "
                            "widths, lean (16, 16, 32, 96) + 96, or narrow (16, 24, 48, 64); v1_rings: v1 with "
                            "the rotation-invariant ring head (training.radio.network.HEADS).")
    stretch: Literal["none", "sqrt", "qroot", "asinh"] = Field("sqrt", description="pool: brightness stretch after min-max "
                                                                         "(recipe key 'stretch', "
                                                                         "models.preprocess.stretch_images).")
    select: bool = Field(True, description="pool: restore the epoch with the best balanced accuracy on the carved "
                                           "validation part (false: the last epoch).")
    uncertainty: bool = Field(True, description="pool: fit calibration and the out-of-distribution rule "
                                                "(training.uncertainty) on the carved validation part.")


class RadioEvaluateOptions(FamilyOptions):
    """How a radio artifact is scored on labelled radio data."""

    split: str | None = Field(None, description="train, valid, test, all or a comma list; None: the data set's "
                                                "published held-out part when present, else all.")
    dataset: str | None = Field(None, description="Data set (see RadioOptions.dataset); None: detected.")
    survey: str | None = Field(None, description="FR-DEEP: FIRST or NVSS.")
    labels: Literal["literature", "CDL1"] = Field("literature", description="Griese label set and split.")
    limit: int | None = Field(None, ge=1, description="Griese: read only the first N groups.")
    force: bool = Field(False, description="Evaluate even when the data's survey or pixel scale is not the "
                                           "model's (the stream would not route it).")
    batch_size: int = Field(256, ge=1, description="Stamps per predict_batch call.")
