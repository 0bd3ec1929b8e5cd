"""CANDELS -> CLASH galaxy morphology CNN (Pérez-Carrasco et al. 2019, PASP 131, 108002).

Five vote fractions per stamp (spheroid/smooth, disk/features, irregular, point source, unclassifiable), the
CANDELS visual scheme of Kartaltepe et al. (2015). The network is trained on single-band CANDELS GOODS-S F160W
stamps and transferred to CLASH, one filter at a time or with several CLASH filters stacked as channels.

Why this architecture rather than the paper's Inception-v2 (about 6 M parameters at 80x80): the stream serves
it on CPU, and the target is >= 1,000 stamps/s at batch 256 on two cores. A Dieleman et al. (2015) style stack
of four convolutions (5x5, then 3x3) with max pooling after each of the first three, global average pooling and
one small dense layer keeps the rotation-friendly inductive bias (training applies the 8 flips/rotations by 90
degrees of the square) at 0.26 M parameters; it serves ~2,400 single-band stamps/s at batch 256 on this CPU.
Batch normalisation was tried and left out: on two CPU cores it cost 60% more training time per epoch, and the
plain network reaches a better test RMSE with that CPU spent on more epochs (docs/morphology.md).

Why 48x48: stamps are cut at four Petrosian radii, so the galaxy fills the same fraction of every stamp whatever
its size; for the H < 24.5 galaxies labelled in CANDELS that cut is typically 30-130 native pixels (0.06"/px),
median about 50, so 48 px is close to native sampling for the typical galaxy (a larger input mostly upsamples).
The published CLASH stamp (a611_f475w_860.fits) is 48x48 too.

Transfer to C channels (`expand_input_channels`): the first convolution's kernel W (k, k, 1, F) becomes
(k, k, C, F) with every channel slice W / C. A stack of C identical channels then gives exactly the
single-band activations, so the transferred network starts from the source model's function (tested), and the
fine-tuning learns how the filters differ.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FAMILY_NAME = "morphology"  # `stampflow train morphology`, metadata "family"
CLASSES = ("smooth", "features", "irregular", "point_source", "unclassifiable")
# Column names of the published label CSVs, in CLASSES order.
LABEL_COLUMNS = ("p_smooth", "p_features", "p_irregular", "p_point_source", "p_unclassifiable")

INPUT_SIZE = 48
TASK = "fractions"
CANDELS_BAND = "F160W"

# The 16 CLASH filters (Postman et al. 2012), blue to red, as they appear (upper-cased) in the CLASH IDs.
CLASH_FILTERS = ("F225W", "F275W", "F336W", "F390W", "F435W", "F475W", "F606W", "F625W", "F775W", "F814W",
                 "F850LP", "F105W", "F110W", "F125W", "F140W", "F160W")

# Per image and channel: asinh((x - median) / (1.4826 MAD)). The stretch is linear within ~1 sigma of the sky
# and logarithmic above, so faint disks and bright bulges both stay visible, and it needs no data-set
# statistics (the paper's global min-max needs the whole training set, which a stream does not have).
PREPROCESS: dict[str, Any] = {"scale": None, "clip_sigma": None, "normalise": "asinh"}


def input_spec_dict(channels: tuple[str, ...] | list[str], size: int = INPUT_SIZE) -> dict[str, Any]:
    """InputSpec as metadata JSON: HST stamps of the given filters, resized whole (4 Petrosian radii)."""
    return {"survey": ["HST"], "channels": [c.upper() for c in channels], "size": int(size), "pixel_scale": None,
            "geometry": "resize"}


INPUT_SPEC = input_spec_dict((CANDELS_BAND,))

FIRST_CONV = "conv1"


def build_model(channels: int = 1, size: int = INPUT_SIZE, *, width: int = 32, dense: int = 128,
                dropout: float = 0.3, seed: int = 0):
    """The morphology CNN: (size, size, channels) float32 -> softmax over the five `CLASSES`.

    Layer names are fixed (conv1..conv4, dense, fractions) so weights can be copied between input widths.
    """
    import keras
    from keras import layers

    init = keras.initializers.HeUniform(seed=seed)
    inp = keras.Input((size, size, channels), name="stamp")
    x = layers.Conv2D(width, 5, padding="same", activation="relu", kernel_initializer=init, name=FIRST_CONV)(inp)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu", kernel_initializer=init, name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(4 * width, 3, padding="same", activation="relu", kernel_initializer=init, name="conv3")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = layers.Conv2D(4 * width, 3, padding="same", activation="relu", kernel_initializer=init, name="conv4")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(dense, activation="relu", kernel_initializer=init, name="dense")(x)
    x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    out = layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="fractions")(x)
    return keras.Model(inp, out, name="morphology_cnn")


def expand_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """(k, k, c_in, F) first-layer kernel -> (k, k, channels, F) such that identical channels reproduce it.

    Each new channel gets the mean over the source channels divided by ``channels``: the sum over the new input
    channels of a stack of identical images then equals the source response to one of them (for a single-band
    source that is exactly W / C per channel).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"expected a (k, k, c, F) kernel, got shape {kernel.shape}")
    per_channel = kernel.sum(axis=2, keepdims=True) / channels
    return np.repeat(per_channel, channels, axis=2).astype(kernel.dtype)


def expand_input_channels(source, channels: int, *, seed: int = 0):
    """A copy of ``source`` (built by `build_model`) taking ``channels`` input channels.

    All weights are copied by layer name; the first convolution's kernel goes through `expand_kernel`. With
    ``channels`` equal to the source's input channels this is a plain copy.
    """
    src_shape = source.input_shape if hasattr(source, "input_shape") else source.inputs[0].shape
    size = int(src_shape[1])
    conv1 = source.get_layer(FIRST_CONV)
    width = int(conv1.filters)
    dense = int(source.get_layer("dense").units)
    dropout = float(source.get_layer("dropout").rate)
    target = build_model(channels=channels, size=size, width=width, dense=dense, dropout=dropout, seed=seed)
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name == FIRST_CONV:
            weights = [expand_kernel(weights[0], channels)] + weights[1:]
        target.get_layer(layer.name).set_weights(weights)
    return target
