"""Fold inference-mode batch normalisation into the convolution before it, for serving.

A ``Conv2D`` (no activation) followed by a ``BatchNormalization`` computes ``s * (conv(x) + b - mean) + beta`` with
``s = gamma / sqrt(var + eps)`` per output channel: one convolution with kernel ``k * s`` and bias
``(b - mean) * s + beta`` gives the same values up to float32 rounding, without the separate pass over the
activation map. On radio-first's network (four conv/BN pairs) that pass cost ~30% of the network's time on the
2-core CPU (docs/models.md, "CPU kernels").

`fold_batchnorm` returns a new functional model built from copies of the layers (the artifact's model is left as
it was); each folded convolution takes its batch normalisation's name, so a tap on that name (an out-of-
distribution feature layer, a Monte-Carlo head's start) sees the same tensor. A pair is folded only when the
convolution feeds nothing else and is not itself a tapped name; a graph with a layer outside `FOLDABLE_GRAPH`
(a nested model, a custom layer) is returned unchanged.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

#: Layer types whose copy from config + weights is exact; every bundled CNN uses only these.
FOLDABLE_GRAPH = frozenset({
    "InputLayer", "Conv2D", "BatchNormalization", "Activation", "ReLU", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dropout", "Dense", "Cropping2D", "Reshape",
    "Permute", "Concatenate", "Average", "Add",
})


def _inputs(layer) -> list:
    x = layer.input
    return list(x) if isinstance(x, (list, tuple)) else [x]


def fold_pairs(model, keep: Iterable[str] = ()) -> dict[str, object]:
    """{convolution name: the BatchNormalization folded into it} for the pairs that can be folded."""
    keep = set(keep)
    producer = {id(layer.output): layer for layer in model.layers if type(layer).__name__ != "InputLayer"}
    consumers: dict[int, int] = {}
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        for t in _inputs(layer):
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    for t in model.outputs:
        consumers[id(t)] = consumers.get(id(t), 0) + 1
    pairs = {}
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        (x,) = _inputs(layer)
        conv = producer.get(id(x))
        if (conv is None or type(conv).__name__ != "Conv2D" or conv.name in keep or consumers.get(id(x)) != 1
                or conv.get_config().get("activation") != "linear" or conv.data_format != "channels_last"
                or layer.axis not in (-1, 3, [-1], [3])):
            continue
        pairs[conv.name] = layer
    return pairs


def folded_weights(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of the one convolution equal to ``bn(conv(x))`` in inference mode, in float64 then float32."""
    kernel = np.asarray(conv.kernel.numpy(), np.float64)
    bias = np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros_like(mean)
    s = gamma / np.sqrt(var + float(bn.epsilon))
    return (kernel * s).astype(np.float32), ((bias - mean) * s + beta).astype(np.float32)


def fold_batchnorm(model, keep: Iterable[str] = ()):
    """A copy of the functional ``model`` with every foldable conv/BN pair as one convolution (see the module);
    ``keep``: layer names that must stay addressable as they are (taps). Returns ``model`` itself when there is
    nothing to fold or a layer is outside `FOLDABLE_GRAPH`."""
    import keras

    if any(type(layer).__name__ not in FOLDABLE_GRAPH for layer in model.layers):
        return model
    pairs = fold_pairs(model, keep)
    if not pairs:
        return model
    folded_bn = {bn.name for bn in pairs.values()}
    new: dict[int, object] = {}
    inputs = []
    for t in model.inputs:
        new[id(t)] = keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name)
        inputs.append(new[id(t)])
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer" or layer.name in folded_bn:
            continue  # inputs are made above; a folded BN's output is its convolution's
        args = [new[id(t)] for t in _inputs(layer)]
        config = layer.get_config()
        if layer.name in pairs:
            bn = pairs[layer.name]
            config.update(use_bias=True, name=bn.name, bias_initializer="zeros", bias_regularizer=None,
                          bias_constraint=None)
            copy = type(layer).from_config(config)
            out = copy(args[0])
            copy.set_weights(list(folded_weights(layer, bn)))
            new[id(bn.output)] = out
            continue
        copy = type(layer).from_config(config)
        out = copy(args if len(args) > 1 else args[0])
        if layer.get_weights():
            copy.set_weights(layer.get_weights())
        new[id(layer.output)] = out
    outputs = [new[id(t)] for t in model.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
