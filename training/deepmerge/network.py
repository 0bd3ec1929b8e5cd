"""DeepMerge: merger / non-merger CNN for z=2 Illustris HST-like stamps (Ćiprijanović et al. 2020, A&C 32, 100390).

The network follows the paper and its public notebook (deepskies/deepmerge-public, DeepMerge.ipynb): 75x75
stamps with 2 (or 3) filters as channels; three blocks Conv2D (8 at 5x5, 16 at 3x3, 32 at 3x3, ReLU, 'same')
-> BatchNorm -> MaxPool 2x2 -> Dropout 0.5; flatten; Dense 64 -> Dense 32 (L2 1e-4 on both) -> Dense 1 sigmoid
(174,505 parameters for 2 filters; the notebook's summary prints 174,801 because its channels-first input
with Keras' default BatchNorm axis=-1 normalised over the image *width*, 4 x 75 + 4 x 37 + 4 x 18 parameters;
we normalise over channels as intended). Deliberate changes, each a parameter that restores the paper:
the notebook gives the two hidden dense layers a *softmax* activation, which squashes 64 features onto a
simplex and slows training a lot, so we use ReLU (``dense_activation="softmax"`` reproduces it); BatchNorm
momentum 0.9 instead of 0.99 (``bn_momentum``); and `training.deepmerge.train` trains with dropout 0.2 instead
of 0.5 (``dropout``; why: see `training.deepmerge.options`).
The first block works at full resolution (75x75x8), ~5.6 M multiply-adds per stamp: fast enough on CPU.

Data (MAST HLSP "DEEPMERGE", doi:10.17909/t9-vqk6-pc80): the 2-filter set is HST ACS F814W + WFC3/IR F160W
(channels in that order: the sample-production notebook keeps filters 1 and 3 of
['ACS-F435W', 'ACS-F814W', 'NC-F356W', 'WFC3-F160W']); the 3-filter set adds JWST NIRCam F356W and is ordered
as its file name says, f814w-f160w-f356w (community notebooks read index 1 as F160W). The paper trains one model
on "pristine" (PSF only) and one on "noisy" (PSF + sky noise, the SB25 set) images: ``variant`` names which,
and is recorded in the artifact (name ``deepmerge`` / ``deepmerge-noisy``).

Pixel scale: the published 75x75 stamps were *resized* by the authors from the Snyder et al. (2019) Illustris
mock images (the sample-production notebook reads ``resized_SB25/``); the HLSP page does not state the final
scale in the text we could read. We record 0.074"/px (the nominal scale the project uses for the z=2 stamps)
as `PIXEL_SCALE` and flag it as assumed; the geometry is ``crop`` so only stamps on that grid are routed here.
"""
from __future__ import annotations

from typing import Any

FAMILY_NAME = "deepmerge"            # `stampflow train deepmerge`, metadata "family"
CLASSES = ("non-merger", "merger")  # the HLSP labels: 0 = non-merger, 1 = merger (positive class)
TASK = "binary"
INPUT_SIZE = 75
PIXEL_SCALE = 0.074  # arcsec/px, assumed (see module docstring)
PIXEL_SCALE_NOTE = ("0.074 arcsec/px is assumed: the HLSP stamps were resized to 75x75 by the authors from the "
                    "Snyder et al. (2019) Illustris mocks and the scale was not confirmed from the HLSP README")
VARIANTS = ("pristine", "noisy")

FILTER_SETS: dict[int, tuple[str, ...]] = {2: ("F814W", "F160W"), 3: ("F814W", "F160W", "F356W")}
# HLSP file-name fields (observatory, instrument) per filter set.
HLSP_FIELDS: dict[int, tuple[str, str]] = {2: ("hst", "acs-wfc3"), 3: ("hst-jwst", "acs-wfc3-nircam")}
INSTRUMENTS: dict[int, str] = {2: "ACS/WFC+WFC3/IR", 3: "ACS/WFC+WFC3/IR+NIRCam"}

# Per image and channel asinh((x - median) / (1.4826 MAD)): linear near the sky, logarithmic above it, so the
# faint tidal features that separate mergers stay visible next to bright nuclei, with no data-set statistics
# to carry around (the stream sees one stamp at a time), and it is invariant to the flux units of the file.
PREPROCESS: dict[str, Any] = {"scale": None, "clip_sigma": None, "normalise": "asinh"}


def model_name(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown DeepMerge variant '{variant}' (pristine or noisy)")
    return "deepmerge" if variant == "pristine" else "deepmerge-noisy"


def filters_for(n_filters: int) -> tuple[str, ...]:
    try:
        return FILTER_SETS[int(n_filters)]
    except KeyError:
        raise ValueError(f"DeepMerge data come with 2 or 3 filters, not {n_filters}") from None


def input_spec_dict(n_filters: int = 2) -> dict[str, Any]:
    """InputSpec as metadata JSON: HST stamps of the DeepMerge filters at the HLSP grid, centre-cropped."""
    return {"survey": ["HST"], "channels": list(filters_for(n_filters)), "size": INPUT_SIZE,
            "pixel_scale": PIXEL_SCALE, "geometry": "crop"}


def input_spec(n_filters: int = 2):
    from models.base import InputSpec

    return InputSpec.from_dict(input_spec_dict(n_filters))


def build_model(n_filters: int = 2, *, variant: str = "pristine", dropout: float = 0.5, l2: float = 1e-4,
                dense_activation: str = "relu", bn_momentum: float = 0.9, seed: int = 0):
    """DeepMerge for (75, 75, n_filters) float32 input -> one sigmoid output P(merger).

    ``variant`` only names the model (pristine / noisy training data); the architecture is the same.
    ``bn_momentum`` 0.9 rather than Keras' 0.99: the paper trained for hundreds of epochs, where the moving
    statistics catch up either way; in a run of a few hundred steps 0.99 leaves them far from the batch
    statistics, and inference-mode outputs collapse to one class while training-mode ones are right.
    """
    import keras
    from keras import layers, regularizers

    filters_for(n_filters)
    name = model_name(variant).replace("-", "_")
    init = keras.initializers.GlorotUniform(seed=seed)
    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, n_filters), name="stamp")
    x = inp
    for i, (width, k) in enumerate(((8, 5), (16, 3), (32, 3)), start=1):
        x = layers.Conv2D(width, k, padding="same", activation="relu", kernel_initializer=init, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i}")(x)
        x = layers.MaxPooling2D(2, padding="valid", name=f"pool{i}")(x)
        x = layers.Dropout(dropout, seed=seed + i, name=f"drop{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation=dense_activation, kernel_regularizer=regularizers.l2(l2),
                     kernel_initializer=init, name="dense1")(x)
    x = layers.Dense(32, activation=dense_activation, kernel_regularizer=regularizers.l2(l2),
                     kernel_initializer=init, name="dense2")(x)
    out = layers.Dense(1, activation="sigmoid", dtype="float32", name="p_merger")(x)
    return keras.Model(inp, out, name=name)
