"""The radio network's ring head (`training.radio.network.HEADS`): the last block's unpooled map averaged per
channel over centred annuli by a fixed Dense, so the head is unchanged by any rotation of the map about its centre
(the trunk is not, and learns that from augmentation). It is recognised again from the layers (`head_of`, which
`served_model` relies on), keeps its fixed weights through training, and loads back in Keras safe mode."""
from __future__ import annotations

import numpy as np

from models.cnn import ring_weights
from training.radio.ensemble import served_model
from training.radio.network import RING_HEAD_RINGS, build_model, head_of


def _feature(model):
    import keras

    return keras.Model(model.input, model.get_layer("flatten").output)


def test_ring_pool_is_the_annulus_mean_of_each_channel_and_ignores_rotation():
    import keras

    m = build_model(n_classes=4, size=40, filters=(4, 6), dense=8, seed=0, head="rings")
    assert head_of(m) == "rings" and head_of(build_model(n_classes=4, size=40, filters=(4, 6), dense=8)) == "flatten"
    grid = keras.Model(m.input, m.get_layer("relu2").output)  # the unpooled last map
    x = np.random.default_rng(0).random((3, 40, 40, 1), dtype=np.float32)
    fmap = np.asarray(grid(x))
    h, w, c = fmap.shape[1:]
    rings = ring_weights(h, w, RING_HEAD_RINGS)
    want = np.einsum("nhwc,rhw->ncr", fmap, rings).reshape(3, c * RING_HEAD_RINGS)
    np.testing.assert_allclose(np.asarray(_feature(m)(x)), want, rtol=1e-5, atol=1e-6)
    # the head alone: a map rotated by 90 degrees about its centre pools to the same features
    head = keras.Model(m.get_layer("ring_grid").input, m.get_layer("flatten").output)
    np.testing.assert_allclose(np.asarray(head(np.rot90(fmap, 1, axes=(1, 2)).copy())), np.asarray(head(fmap)),
                               rtol=1e-5, atol=1e-6)


def test_the_ring_weights_stay_fixed_and_survive_the_served_copy_and_safe_mode(tmp_path):
    import keras

    m = build_model(n_classes=4, size=40, filters=(4, 6), dense=8, seed=0, head="rings")
    before = m.get_layer("ring_pool").get_weights()[0].copy()
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    m.fit(rng.random((16, 40, 40, 1), dtype=np.float32), rng.integers(0, 4, 16), epochs=2, verbose=0)
    np.testing.assert_array_equal(m.get_layer("ring_pool").get_weights()[0], before)
    served = served_model([m])
    assert head_of(served, prefix="m0_") == "rings"
    path = tmp_path / "rings.keras"
    served.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = rng.random((2, 40, 40, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(m(x, training=False)), rtol=1e-5, atol=1e-6)
