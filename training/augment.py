"""On-the-fly training augmentation for the CNN families: the one place that builds augmentation layers.

Both run inside the tf.data pipeline of `training.cnn.fit` (``augment(x, training=True)`` per batch), never at
serving time. TensorFlow and Keras are imported when a family asks for an augmentation, not at import.
"""
from __future__ import annotations


def augmentation(rotate_deg: float = 0.0, flip: str | None = None, zoom: float = 0.0, shift: float = 0.0,
                 seed: int = 0):
    """Keras preprocessing layers for on-the-fly augmentation, or None if nothing is asked.

    ``rotate_deg``: maximum rotation either way (180 = any angle); ``flip``: "horizontal", "vertical" or
    "horizontal_and_vertical"; ``zoom``: ±fraction; ``shift``: ±fraction of the image size. Empty corners are
    filled with the nearest edge pixels, so augmentation never invents a border the sky does not have.
    """
    from models.tensorflow_runtime import tensorflow

    tensorflow()
    import keras

    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if rotate_deg:
        layers.append(keras.layers.RandomRotation(rotate_deg / 360.0, fill_mode="nearest", seed=seed + 1))
    if zoom:
        layers.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode="nearest", seed=seed + 2))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed + 3))
    return keras.Sequential(layers, name="augmentation") if layers else None


def dihedral_augmentation(seed: int = 0):
    """Random flips and transposes per image: the 8 symmetries of a square stamp (rotations by multiples of 90
    degrees and their mirror images).

    For families whose targets do not depend on orientation (galaxy morphology, mergers). These are exact pixel
    permutations (no interpolation, no invented corners) and cost next to nothing, unlike `augmentation`'s
    arbitrary-angle rotation with zoom and shift, which added a quarter to the CPU time of a morphology epoch
    and gave a worse test RMSE after the same 8 CANDELS epochs (0.179 vs 0.145; see docs/morphology.md).
    Each image of a batch draws its own symmetry.
    """
    from models.tensorflow_runtime import tensorflow

    tf = tensorflow()
    import keras

    flip = keras.layers.RandomFlip("horizontal_and_vertical", seed=seed)

    def augment(x, training: bool = True):
        if not training:
            return x
        x = flip(x, training=True)
        # a transpose composed with the two flips reaches all 8 elements of the dihedral group
        swap = tf.random.uniform((tf.shape(x)[0], 1, 1, 1), seed=seed + 1) < 0.5
        return tf.where(swap, tf.transpose(x, (0, 2, 1, 3)), x)

    return augment
