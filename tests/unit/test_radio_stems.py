"""The radio network's stems (`training.radio.network.STEMS`): the space-to-depth rearrangement is lossless and
ordered as documented, every stem lands on the quarter grid, is recognised again from the layers (`stem_of`, which
`served_model` relies on), survives the served copy and loads back in Keras safe mode."""
from __future__ import annotations

import numpy as np
import pytest

from training.radio.ensemble import served_model
from training.radio.network import STEMS, build_model, space_to_depth, stem_of


def test_space_to_depth_is_a_lossless_centred_rearrangement():
    import keras

    size = 34  # not a multiple of 4: one row and column cropped on each side
    inp = keras.Input((size, size, 1))
    rearranged = keras.Model(inp, space_to_depth(inp, 4))
    x = np.random.default_rng(0).random((2, size, size, 1), dtype=np.float32)
    got = np.asarray(rearranged(x))
    assert got.shape == (2, 8, 8, 16)
    for i, j, a, b in [(0, 0, 0, 0), (3, 5, 2, 1), (7, 7, 3, 3), (2, 6, 1, 3)]:
        np.testing.assert_array_equal(got[:, i, j, 4 * a + b], x[:, 1 + 4 * i + a, 1 + 4 * j + b, 0])
    # every kept pixel appears exactly once
    np.testing.assert_array_equal(np.sort(got.reshape(2, -1), axis=1), np.sort(x[:, 1:33, 1:33, 0].reshape(2, -1),
                                                                                axis=1))


@pytest.mark.parametrize("stem", STEMS)
def test_each_stem_lands_on_the_quarter_grid_is_recognised_and_loads_in_safe_mode(stem, tmp_path):
    import keras

    a = build_model(n_classes=4, size=34, filters=(4, 8), dense=8, seed=0, stem=stem, extra_conv=6)
    assert stem_of(a) == stem
    assert a.get_layer("conv2").input.shape[1:3] == (8, 8)  # 34 px -> the 8x8 grid after the first block
    m = served_model([a])
    assert stem_of(m, prefix="m0_") == stem
    x = np.random.default_rng(1).random((3, 34, 34, 1), dtype=np.float32)
    want = np.asarray(a(x, training=False))
    np.testing.assert_allclose(np.asarray(m(x, training=False)), want, rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.keras"
    m.save(path)
    back = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(back(x, training=False)), want, rtol=1e-5, atol=1e-6)
