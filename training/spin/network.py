"""SDSS galaxy spin CNN: regress the MaNGA stellar spin parameter lambda_R from an SDSS colour stamp.

Seed: Chris Duckworth's sdss_CNN (github.com/Chris-Duckworth/sdss_CNN; a D-S 2018-like stack), whose README
and ``NN/lib/sdss_model_constructors.py`` give the tuned network we follow:

* input (80, 80, 3): SDSS RGB cutouts of 424x424 px at 0.02 R_e per pixel (8.48 R_e across, so the galaxy
  fills the same fraction of every stamp) downsampled to 80x80, pixel values scaled to [0, 1];
* five 'valid' ReLU convolutions, 64/96/128/192/192 filters with 6x6, 5x5, 2x2, 2x2, 2x2 kernels, dropout
  0.5, 0.25, 0.25, 0.25, 0.25 after them, 2x2 max pooling after the 2nd and 3rd;
* flatten (15 x 15 x 192 = 43,200) -> Dense 128 ReLU -> Dropout 0.25 -> Dense 64 linear -> Dense 1 linear;
  5,994,145 parameters; MSE loss, Adam 1e-3 with ReduceLROnPlateau (patience 5, factor 0.2, min 1e-5);
* training augmentation: zoom +-25 %, rotation +-45 deg, horizontal and vertical flips, 5 % shifts;
  split 70/15/15.

`build_model(head="flatten", width=1.0, first_stride=1)` is exactly that network (tested parameter count).
The flatten head alone holds 5.5 M of the 6 M parameters (a 24 MB artifact) and the full-width first layers
cost ~0.9 G multiply-adds per stamp, far beyond a few minutes of CPU training here. The bundled model therefore
uses the same convolution stack (kernels, dropout, pooling) at half width, a stride-2 first convolution and
global average pooling before the same 128 -> 64 -> 1 head, and 0.1 dropout after the convolutions
(`BUNDLED_CONFIG`, see `build_model`): ~0.13 M parameters. Spin is
exempt from the 1,000 stamps/s serving target; its measured rate is reported in docs/spin.md.

Channels: SDSS colour JPEGs (SkyServer ImgCutout; Lupton et al. 2004) map i, r, g to R, G, B, so the input
channels are named ("i", "r", "g") in that order. Geometry ``resize``: stamps are cut at a fixed multiple of
the galaxy's radius, so their pixel scale varies per object and the whole stamp is resized to 80x80.
Stamps in packets carry the 8-bit values as floats; the recipe's ``scale`` 1/255 brings them to [0, 1], in
training and serving alike.
"""
from __future__ import annotations

from typing import Any

FAMILY_NAME = "spin"  # `stampflow train spin`, metadata "family"
CLASSES = ("lambda_R",)
TASK = "regression"
INPUT_SIZE = 80
CHANNELS = ("i", "r", "g")  # R, G, B of SDSS colour images
PREPROCESS: dict[str, Any] = {"scale": 1.0 / 255.0, "clip_sigma": None, "normalise": "raw"}
NAME = "spin"

SEED_FILTERS = (64, 96, 128, 192, 192)
SEED_KERNELS = (6, 5, 2, 2, 2)
SEED_DROPOUT = (0.5, 0.25, 0.25, 0.25, 0.25)
POOL_AFTER = (2, 3)  # 1-based conv indices followed by 2x2 max pooling
SEED_PARAMETERS = 5_994_145
BUNDLED_CONFIG: dict[str, Any] = {"width": 0.5, "head": "gap", "first_stride": 2, "conv_dropout": 0.1}


def input_spec_dict(size: int = INPUT_SIZE) -> dict[str, Any]:
    """SDSS colour stamps, any pixel scale (cut at a multiple of R_e), resized whole to size x size."""
    return {"survey": ["SDSS"], "channels": list(CHANNELS), "size": int(size), "pixel_scale": None,
            "geometry": "resize"}


def input_spec(size: int = INPUT_SIZE):
    from models.base import InputSpec

    return InputSpec.from_dict(input_spec_dict(size))


def build_model(*, width: float = 1.0, head: str = "flatten", first_stride: int = 1,
                conv_dropout: float | None = None, size: int = INPUT_SIZE, seed: int = 0):
    """The sdss_CNN network, (size, size, 3) float32 in [0, 1] -> lambda_R (linear output).

    ``width`` scales every convolution's filter count; ``head`` is ``flatten`` (the seed) or ``gap`` (global
    average pooling); ``first_stride`` 2 halves the first convolution's output grid; ``conv_dropout`` replaces
    the seed's 0.5/0.25 dropout after the convolutions with one rate (the dense 0.25 stays). Why the bundled
    model uses 0.1: with the seed's rates and ReLU convolutions, a short CPU run ended with inference-mode
    predictions compressed towards the mean (slope 0.37 against the truth on the training rows themselves,
    0.83 with dropout left on) -- the train/inference mismatch dropout causes before non-linear layers.
    """
    import keras
    from keras import layers

    if head not in ("flatten", "gap"):
        raise ValueError(f"unknown head '{head}' (flatten or gap)")
    if width <= 0 or first_stride not in (1, 2):
        raise ValueError("width must be > 0 and first_stride 1 or 2")
    init = keras.initializers.GlorotUniform(seed=seed)
    inp = keras.Input((size, size, len(CHANNELS)), name="stamp")
    x = inp
    rates = SEED_DROPOUT if conv_dropout is None else (float(conv_dropout),) * len(SEED_DROPOUT)
    for i, (f, k, d) in enumerate(zip(SEED_FILTERS, SEED_KERNELS, rates), start=1):
        x = layers.Conv2D(max(4, int(round(f * width))), k, strides=first_stride if i == 1 else 1, padding="valid",
                          activation="relu", kernel_initializer=init, name=f"conv{i}")(x)
        if i in POOL_AFTER:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Dropout(d, seed=seed + i, name=f"drop{i}")(x)
    x = layers.Flatten(name="flatten")(x) if head == "flatten" else layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(128, activation="relu", kernel_initializer=init, name="dense1")(x)
    x = layers.Dropout(0.25, seed=seed + 10, name="drop_dense")(x)
    x = layers.Dense(64, kernel_initializer=init, name="dense2")(x)
    out = layers.Dense(1, dtype="float32", name="lambda_R")(x)
    return keras.Model(inp, out, name="spin_cnn")
