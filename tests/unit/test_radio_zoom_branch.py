"""The radio network's zoom branch (`training.radio.network.zoom_branch`): a second, full-resolution stack on the
central 76x76 of the stamp, joined to the main stack before the dense layer. It must see only the centre, survive
`served_model` (which rebuilds members from their layers) and the served copy's batch-norm folding, and load back in
Keras safe mode."""
from __future__ import annotations

import numpy as np

from training.radio.ensemble import served_model
from training.radio.network import ZOOM_CROP, build_model


def test_the_zoom_branch_sees_only_the_central_76_pixels():
    import keras

    m = build_model(n_classes=4, size=150, filters=(4, 6, 8, 8), dense=8, seed=0, zoom=True)
    branch = keras.Model(m.input, m.get_layer("zflatten").output)
    assert m.get_layer("zcrop").output.shape[1:3] == (150 - 2 * ZOOM_CROP, 150 - 2 * ZOOM_CROP) == (76, 76)
    x = np.random.default_rng(0).random((2, 150, 150, 1), dtype=np.float32)
    y = x.copy()
    y[:, :ZOOM_CROP] = 0.0   # change only what lies outside the central 76x76
    y[:, :, -ZOOM_CROP:] = 5.0
    np.testing.assert_allclose(np.asarray(branch(x)), np.asarray(branch(y)), atol=1e-6)
    assert np.abs(np.asarray(m(x)) - np.asarray(m(y))).max() > 1e-4   # the main stack does see it
    assert m.get_layer("zoom_join").output.shape[-1] == 2 * 4 * 4 * 8


def test_a_zoom_member_is_served_and_loads_in_safe_mode(tmp_path):
    import keras

    from models.batchnorm_fold import fold_batchnorm
    from models.cnn import compile_predict

    m = build_model(n_classes=4, size=150, filters=(4, 6, 8, 8), dense=8, seed=1, zoom=True)
    # non-trivial batch-norm statistics, so folding has something to fold
    for layer in m.layers:
        if type(layer).__name__ == "BatchNormalization":
            g, b, mu, var = layer.get_weights()
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([g * 1.5, b + 0.1, mu + rng.normal(0, 0.1, mu.shape), var * 2.0])
    x = np.random.default_rng(2).random((3, 150, 150, 1), dtype=np.float32)
    want = np.asarray(m(x, training=False))
    served = served_model([m])
    assert any(layer.name == "m0_zcrop" for layer in served.layers)
    np.testing.assert_allclose(np.asarray(served(x, training=False)), want, atol=1e-5)
    # the worker's path: the folded copy through the serving tf.function
    np.testing.assert_allclose(compile_predict(fold_batchnorm(served), (150, 150, 1))(x), want, atol=1e-4)
    served.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(x, training=False)), want, atol=1e-5)


def test_the_zoom_branch_is_read_off_the_layers():
    from training.radio.network import zoom_of

    assert zoom_of(build_model(n_classes=4, size=150, filters=(4, 6, 8, 8), dense=8, zoom=True))
    assert not zoom_of(build_model(n_classes=4, size=150, filters=(4, 6, 8, 8), dense=8))
