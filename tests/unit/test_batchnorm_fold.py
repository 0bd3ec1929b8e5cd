"""Serving folds inference-mode batch normalisation into the convolution before it (`models.batchnorm_fold`):
the same outputs to float32 rounding, fewer passes over the activation maps."""
from __future__ import annotations

import numpy as np
import pytest

from models.batchnorm_fold import fold_batchnorm, fold_pairs
from models.cnn import compile_predict, compile_serving
from models.tensorflow_runtime import tensorflow
from models.registry import Registry


def _model(with_bias: bool = False, branch: bool = False):
    tensorflow()
    import keras
    from keras import layers

    inp = keras.Input((16, 16, 1), name="stamp")
    x = layers.Conv2D(4, 3, strides=2, padding="same", use_bias=with_bias, name="conv1")(inp)
    side = x
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Activation("relu", name="relu1")(x)
    x = layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Activation("relu", name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    if branch:  # conv1's raw output also feeds the head: its pair must not be folded
        x = layers.Concatenate(name="cat")([x, layers.Flatten(name="flat_side")(side)])
    x = layers.Dropout(0.3, name="drop")(x)
    out = layers.Dense(3, activation="softmax", name="classes")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # trained-looking statistics, so folding has something to fold
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 1, n),
                               rng.uniform(0.1, 3, n)])
        elif type(layer).__name__ == "Conv2D" and layer.use_bias:
            layer.set_weights([layer.kernel.numpy(), rng.normal(0, 0.5, layer.filters)])
    return model


@pytest.mark.parametrize("with_bias", [False, True])
def test_folded_model_gives_the_same_outputs(with_bias):
    model = _model(with_bias)
    before = [layer.name for layer in model.layers]
    folded = fold_batchnorm(model)
    assert [type(l).__name__ for l in folded.layers].count("BatchNormalization") == 0
    assert folded.get_layer("bn1").use_bias and type(folded.get_layer("bn1")).__name__ == "Conv2D"
    x = np.random.default_rng(1).normal(size=(20, 16, 16, 1)).astype(np.float32)
    a = compile_predict(model, (16, 16, 1))(x)
    b = compile_predict(folded, (16, 16, 1))(x)
    assert np.abs(a - b).max() < 1e-5
    assert [layer.name for layer in model.layers] == before  # the artifact's model is left as it was
    assert "bn1" in before and len(folded.layers) == len(before) - 2


def test_a_tapped_or_shared_convolution_is_not_folded():
    assert set(fold_pairs(_model())) == {"conv1", "conv2"}
    assert set(fold_pairs(_model(), keep=["conv2"])) == {"conv1"}
    assert set(fold_pairs(_model(branch=True))) == {"conv2"}
    model = _model(branch=True)
    x = np.random.default_rng(2).normal(size=(8, 16, 16, 1)).astype(np.float32)
    assert np.abs(compile_predict(model, (16, 16, 1))(x) - compile_predict(fold_batchnorm(model), (16, 16, 1))(x)).max() < 1e-5


def test_taps_by_name_see_the_same_tensor_after_folding():
    model = _model()
    x = np.random.default_rng(3).normal(size=(8, 16, 16, 1)).astype(np.float32)
    kwargs = dict(feature_layer="bn2", feature_rings=2, mc_from="drop", mc_samples=10, mc_seed=0)
    a = compile_serving(model, (16, 16, 1), **kwargs)(x)
    b = compile_serving(fold_batchnorm(model, keep=["bn2", "drop"]), (16, 16, 1), **kwargs)(x)
    for key in ("outputs", "features", "mc_std"):
        assert np.abs(a[key] - b[key]).max() < 1e-5, key


def test_every_bundled_cnn_serves_its_own_outputs():
    """Each bundled CNN through the worker's (folded) path against its own Keras model, unfolded."""
    from models.preprocess import apply_recipe

    registry = Registry()
    seen = 0
    for info in registry.list():
        if info.metadata.get("weights") != "model.keras":
            continue
        clf = registry.load(f"{info.name}@{info.version}")
        spec = clf.input_spec
        x = np.random.default_rng(4).random((16, spec.size, spec.size, spec.n_channels), dtype=np.float32)
        prepared = apply_recipe(x, clf.recipe)
        want = compile_predict(clf.model, prepared.shape[1:])(prepared)
        got = clf._serve(prepared)["outputs"]
        assert np.abs(want - got).max() < 1e-4, f"{info.name}@{info.version}"
        seen += 1
    assert seen >= 6
