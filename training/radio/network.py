"""Radio-galaxy morphology CNN for FIRST (and, by transfer, NVSS) cutouts: FRI / FRII / Compact / Bent.

The seed is the FIRST Classifier of Alhassan, Taylor & Vaccari (2018, MNRAS 480, 2085): 150x150x1 FIRST
stamps, noise clipped at 3 sigma, min-max scaled, a few convolution blocks, a dense layer and a softmax over the
four classes, trained with rotations and flips. The published code (wathela/FIRST-CLASSIFIER) cuts the central
150x150 pixels of a 300x300 SkyView cutout ([75:225, 75:225]), which is what ``geometry: crop`` does to the
Griese stamps (centre-crop 300 -> 150 at 1.8"/px, i.e. a 4.5' field).

How ours differs, and why:
- a 5x5 convolution with stride 2 first, then 2x2 max pooling after every block: the network runs on a
  37x37 grid after the first block instead of convolving the full 150x150 stamp, so it serves >= 1,000
  stamps/s at batch 256 on two CPU cores. FIRST's 5.4" beam is three pixels, so a stride-2 5x5 kernel still
  samples every beam;
- batch normalisation after each convolution: with ~2,000 training images and a CPU budget of minutes it
  converges in tens of epochs rather than hundreds;
- a 128-unit dense layer on the flattened 4x4x64 map (a flatten, not a global pooling, keeps where the bright
  components sit, which is what separates core-brightened FRI from edge-brightened FRII), dropout 0.25 before
  and after it; ~0.19 M parameters (~0.85 MB file), small enough to commit. With dropout 0.5 and a 9x9 map
  (0.73 M parameters) the net under-fitted in the same budget (76% vs the numbers in docs/radio.md);
- Adam (lr 1e-3, cosine decay) instead of RMSprop (lr 1e-4), for the same reason as batch normalisation.

Transfer learning (Tang, Scaife & Leahy 2019): `build_model(n_classes=2)` is the FRI/FRII variant;
``stampflow train radio --from MODEL --freeze N`` starts from the source network (its softmax head replaced
when the class count differs), freezes its first N weighted layers (conv1, bn1, conv2, ... in order) and
fine-tunes the rest.
"""
from __future__ import annotations

from typing import Any

from training.radio.sets import BAND, FIRST_PIXEL_SCALE, NVSS_PIXEL_SCALE
from training.radio.sets import GRIESE_CLASSES as CLASSES

INPUT_SIZE = 150
TASK = "classification"

# InputSpec as metadata JSON (models.base.InputSpec.from_dict).
INPUT_SPEC: dict[str, Any] = {"survey": ["FIRST"], "channels": [BAND], "size": INPUT_SIZE,
                              "pixel_scale": FIRST_PIXEL_SCALE, "geometry": "crop"}
NVSS_INPUT_SPEC: dict[str, Any] = {"survey": ["NVSS"], "channels": [BAND], "size": INPUT_SIZE,
                                   "pixel_scale": NVSS_PIXEL_SCALE, "geometry": "crop"}
SURVEY_INPUT_SPEC = {"FIRST": INPUT_SPEC, "NVSS": NVSS_INPUT_SPEC}

# Per image: pixels below median + 3 sigma (MAD) go to the median (the noise floor; Alhassan et al. clip at
# 3 sigma too), then min-max to [0, 1]. The published 8-bit images are already clipped and scaled, for which
# this is the identity up to the 1/255 scale that min-max removes.
PREPROCESS: dict[str, Any] = {"scale": None, "clip_sigma": 3.0, "normalise": "minmax"}

# Training augmentation: any rotation and both flips (morphology has no preferred orientation).
AUGMENT: dict[str, Any] = {"rotate_deg": 180.0, "flip": "horizontal_and_vertical"}

CONV_FILTERS = (16, 32, 64, 64)


# radio-first 2.0.0 ("deep"): capacity spent where the grid is small. Narrower early blocks (the 37x37 and 18x18
# convolutions are most of the multiply-adds) and a second 3x3 convolution of 96 channels on the 9x9 grid: ~20.6 M
# multiply-adds per stamp against 1.0.0's ~17.7 M, 0.35 M parameters against 0.19 M.
DEEP_FILTERS = (16, 24, 48, 96)
DEEP_EXTRA_CONV = 96

# The first block's stem. conv5s2 (1.0.0): 5x5 stride-2 convolution on the 150x150 stamp, then 2x2 pooling.
# patch4: one 4x4 stride-4 convolution straight to the 37x37 grid (7.2" patches, the 5.4" beam inside each), no
# pooling. A 1-channel convolution over the full stamp is memory-bound on a CPU: with the same widths the patch stem
# ran the network 1.7x faster (1,657 vs 956 images/s at batch 256, idle, random weights).
# s2d4: the stamp rearranged losslessly into 4x4 blocks (37x37x16, built-in Cropping2D/Reshape/Permute layers, so
# safe mode loads it), then a 3x3 convolution there: a 12x12 stride-4 receptive field, so a source shifted by a
# pixel or two still lands in the same filter (what patch4's disjoint patches lose against a max pool).
# patch2: a 2x2 stride-2 convolution (cheap: 4 inputs per output) to 75x75, then 2x2 max pooling as in conv5s2.
#: stem -> (kernel, stride) of its first convolution (s2d4's is a plain 3x3 on the rearranged grid)
STEM_CONV = {"conv5s2": (5, 2), "patch4": (4, 4), "s2d4": (3, 1), "patch2": (2, 2)}
STEMS = tuple(STEM_CONV)

# The head. flatten (1.0.0): the last block is pooled to 4x4 and flattened, which keeps where each feature sits but
# has to learn every orientation of it. rings (seventh session): the last block's 9x9 map, unpooled, averaged over
# RING_HEAD_RINGS centred annuli per channel (a fixed, non-trainable Dense over the flattened grid, so safe mode
# loads it): invariant to rotation about the centre by construction, while "what is at the core" and "what is at
# the edge", the FRI/FRII difference, stay apart.
HEADS = ("flatten", "rings")
RING_HEAD_RINGS = 3

# The zoom branch (eighth session): a second stack of the same widths on the central half of the stamp (76x76,
# 137") at full resolution, a 3x3 stride-1 first convolution instead of the 5x5 stride-2 one, so a small double
# (an FRII of 10-20", 5-10 px) or a core and its jets still spans several cells after the first pooling, where the
# main stack has already gone to 7.2" cells. Its flattened 4x4 map joins the main one before the dense layer.
ZOOM_CROP = 37   # pixels cropped from each side of the 150x150 stamp: the central 76x76


def ring_pool(x, rings: int, prefix: str = ""):
    """(N, H, W, C) -> (N, rings * C): per-channel means over `models.cnn.ring_weights` annuli, built-in layers."""
    from keras import layers

    from models.cnn import ring_weights

    h, w, c = (int(d) for d in x.shape[1:])
    x = layers.Reshape((h * w, c), name=f"{prefix}ring_grid")(x)
    x = layers.Permute((2, 1), name=f"{prefix}ring_channels")(x)
    pool = layers.Dense(rings, use_bias=False, trainable=False, name=f"{prefix}ring_pool")
    x = pool(x)
    pool.set_weights([ring_weights(h, w, rings).reshape(rings, h * w).T])
    return layers.Flatten(name=f"{prefix}flatten")(x)


def head_of(model, prefix: str = "") -> str:
    """Which head a network built by `build_model` has (read off its layer names)."""
    return "rings" if any(layer.name == f"{prefix}ring_pool" for layer in model.layers) else "flatten"


def zoom_of(model, prefix: str = "") -> bool:
    """Whether a network built by `build_model` has the zoom branch (read off its layer names)."""
    return any(layer.name == f"{prefix}zcrop" for layer in model.layers)


def stem_of(model, prefix: str = "") -> str:
    """The `STEMS` entry a network built by `build_model` was built with, read off its layers."""
    if any(layer.name == f"{prefix}s2d" for layer in model.layers):
        return "s2d4"
    kernel = model.get_layer(f"{prefix}conv1").kernel_size[0]
    return next(stem for stem, (k, _) in STEM_CONV.items() if k == kernel and stem != "s2d4")


def space_to_depth(x, block: int, prefix: str = ""):
    """(N, H, W, 1) -> (N, H // block, W // block, block * block): each block x block patch becomes one pixel's
    channels (centre-cropped first when H or W is not a multiple of ``block``)."""
    from keras import layers

    h, w = int(x.shape[1]), int(x.shape[2])
    ch, cw = h % block, w % block
    if ch or cw:
        x = layers.Cropping2D(((ch // 2, ch - ch // 2), (cw // 2, cw - cw // 2)), name=f"{prefix}s2d_crop")(x)
    gh, gw = h // block, w // block
    x = layers.Reshape((gh, block, gw, block), name=f"{prefix}s2d_split")(x)
    x = layers.Permute((1, 3, 2, 4), name=f"{prefix}s2d_permute")(x)
    return layers.Reshape((gh, gw, block * block), name=f"{prefix}s2d")(x)


def build_model(n_classes: int = len(CLASSES), size: int = INPUT_SIZE, *, filters: tuple[int, ...] = CONV_FILTERS,
                dense: int = 128, dropout: float = 0.25, seed: int = 0, prefix: str = "", inputs=None,
                extra_conv: int = 0, stem: str = "conv5s2", head: str = "flatten", zoom: bool = False):
    """(size, size, 1) float32 -> softmax over ``n_classes``. Layer names are fixed so weights transfer;
    ``prefix`` and ``inputs`` (a shared Keras input) let an ensemble hold several copies in one flat graph.
    ``extra_conv``: channels of a second 3x3 convolution in the last block (``conv<n>b``, before its pooling);
    0 = none (1.0.0). ``stem``: the first block, one of `STEMS`; ``head``: one of `HEADS`; ``zoom``: add the
    full-resolution branch on the central 76x76 (`ZOOM_CROP`)."""
    import keras
    from keras import layers

    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r} (choose from {', '.join(STEMS)})")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r} (choose from {', '.join(HEADS)})")
    init = keras.initializers.HeNormal(seed=seed)
    inp = keras.Input((size, size, 1), name="stamp") if inputs is None else inputs
    x = space_to_depth(inp, 4, prefix) if stem == "s2d4" else inp
    for i, f in enumerate(filters, start=1):
        first = i == 1
        patch = first and stem in ("patch4", "patch2")
        kernel, stride = STEM_CONV[stem] if first else (3, 1)
        x = layers.Conv2D(f, kernel, strides=stride, padding="valid" if patch else "same", use_bias=False,
                          kernel_initializer=init, name=f"{prefix}conv{i}")(x)
        x = layers.BatchNormalization(name=f"{prefix}bn{i}")(x)
        x = layers.Activation("relu", name=f"{prefix}relu{i}")(x)
        if extra_conv and i == len(filters):
            x = layers.Conv2D(extra_conv, 3, padding="same", use_bias=False, kernel_initializer=init,
                              name=f"{prefix}conv{i}b")(x)
            x = layers.BatchNormalization(name=f"{prefix}bn{i}b")(x)
            x = layers.Activation("relu", name=f"{prefix}relu{i}b")(x)
        if first and stem in ("patch4", "s2d4"):  # these stems land on the 37x37 grid themselves
            continue
        if head == "rings" and i == len(filters):  # the ring head averages the unpooled last map
            continue
        x = layers.MaxPooling2D(2, name=f"{prefix}pool{i}")(x)
    x = ring_pool(x, RING_HEAD_RINGS, prefix) if head == "rings" else layers.Flatten(name=f"{prefix}flatten")(x)
    if zoom:
        x = layers.Concatenate(name=f"{prefix}zoom_join")([x, zoom_branch(inp, filters, init, prefix)])
    x = layers.Dropout(dropout, seed=seed, name=f"{prefix}dropout1")(x)
    x = layers.Dense(dense, activation="relu", kernel_initializer=init, name=f"{prefix}dense")(x)
    x = layers.Dropout(dropout, seed=seed + 1, name=f"{prefix}dropout2")(x)
    out = layers.Dense(n_classes, activation="softmax", dtype="float32", name=f"{prefix}classes")(x)
    return keras.Model(inp, out, name=f"{prefix}radio_cnn")


def zoom_branch(inp, filters: tuple[int, ...], init, prefix: str = ""):
    """The central 76x76 of the stamp through `filters`-wide 3x3 blocks (stride 1, each followed by 2x2 max
    pooling: 76 -> 38 -> 19 -> 9 -> 4), flattened. Layers ``z<name>``: conv/bn pairs, so the served copy folds
    them like the main stack's."""
    from keras import layers

    x = layers.Cropping2D(ZOOM_CROP, name=f"{prefix}zcrop")(inp)
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_initializer=init, name=f"{prefix}zconv{i}")(x)
        x = layers.BatchNormalization(name=f"{prefix}zbn{i}")(x)
        x = layers.Activation("relu", name=f"{prefix}zrelu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}zpool{i}")(x)
    return layers.Flatten(name=f"{prefix}zflatten")(x)
