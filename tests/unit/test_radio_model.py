"""The radio CNN: architecture, transfer helpers, train/evaluate on tiny real-layout data, and the bundled model."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from models.base import InputSpec
from schemas.errors import StampflowError
from training.family import TrainOptions
from training.radio import FAMILY as RADIO
from training.radio.griese import load_griese, write_griese_h5
from training.radio.network import CLASSES, INPUT_SPEC, NVSS_INPUT_SPEC, PREPROCESS, build_model

GRIESE_ZIP = "radio/first_galaxy_dataset/galaxy_data_trainvalid_h5.zip"


@pytest.fixture(scope="module")
def griese_valid(data_dir):
    return load_griese(data_dir / GRIESE_ZIP, split="valid")


def test_architecture_shapes():
    m = build_model()
    assert tuple(m.inputs[0].shape) == (None, 150, 150, 1)
    out = m(np.zeros((3, 150, 150, 1), np.float32), training=False)
    assert tuple(out.shape) == (3, 4)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    assert tuple(build_model(n_classes=2).outputs[0].shape) == (None, 2)
    names = [layer.name for layer in m.layers if layer.weights]
    assert names[:2] == ["conv1", "bn1"] and names[-1] == "classes"
    spec = InputSpec.from_dict(INPUT_SPEC)
    assert spec.size == 150 and spec.geometry == "crop" and spec.channels == ("1.4GHz",) and spec.surveys == ("FIRST",)
    assert InputSpec.from_dict(NVSS_INPUT_SPEC).pixel_scale == 15.0
    assert PREPROCESS == {"scale": None, "clip_sigma": 3.0, "normalise": "minmax"}


def _train(opts: TrainOptions, pairs: dict[str, str] | None = None):
    """A training run with ``--set`` pairs, parsed as the command line parses them."""
    return RADIO.train(opts, RADIO.parse(pairs or {}))


def _evaluate(model: str, data, pairs: dict[str, str]):
    """``stampflow evaluate MODEL --data DATA --set k=v``: resolve, parse the options, evaluate."""
    from models.registry import Registry

    return RADIO.evaluate(Registry().resolve(model), data, RADIO.parse_evaluate(pairs))


def test_transfer_head_and_freeze():
    from training.cnn import freeze_first
    from training.radio.train import transfer_model as _transfer_model

    src = build_model(n_classes=4, seed=1)
    same, new_head = _transfer_model(src, 4, seed=0)
    assert same is src and not new_head
    tgt, new_head = _transfer_model(src, 2, seed=0)
    assert new_head and tuple(tgt.outputs[0].shape) == (None, 2)
    np.testing.assert_array_equal(tgt.get_layer("conv2").get_weights()[0], src.get_layer("conv2").get_weights()[0])
    assert freeze_first(tgt, 2) == ["conv1", "bn1"]
    assert not tgt.get_layer("conv1").trainable and tgt.get_layer("conv2").trainable


def _tiny_griese(tmp_path, rs, zipped=False, n_train=24, n_valid=8):
    """Real Griese images re-written in the Griese layout: n_train 'train' + n_valid 'valid', classes cycled."""
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(rs.labels == c))[:(n_train + n_valid) // 4]
                          for c in range(4)])
    idx = idx[np.argsort(np.arange(len(idx)) % ((n_train + n_valid) // 4))]  # interleave classes
    splits = ["train"] * n_train + ["valid"] * n_valid
    path = tmp_path / ("tiny.zip" if zipped else "tiny.h5")
    return write_griese_h5(path, rs.images[idx], rs.labels[idx], splits, zipped=zipped), rs.labels[idx]


def test_train_then_transfer_smoke(tmp_path, griese_valid):
    data, _ = _tiny_griese(tmp_path, griese_valid)
    out = tmp_path / "reg"
    res = _train(TrainOptions(data=data, epochs=1, batch_size=16, out_root=out, version="0.0.1"),
                 {"patience": "0", "val_fraction": "0.25", "throughput": "false"})
    art = out / "radio-first" / "0.0.1"
    meta = json.loads((art / "metadata.json").read_text())
    assert res["artifact"] == str(art) and meta["family"] == "radio" and meta["trained_on"] == "real"
    assert meta["classes"] == list(CLASSES) and meta["input_spec"]["geometry"] == "crop"
    assert meta["split"]["counts"] == {"fit": 16, "validation": 8, "test": 8}  # 2 of 6 per class
    assert {"training_curves.png", "confusion_matrix.png", "model.keras"} <= {p.name for p in art.iterdir()}
    assert 0.0 <= meta["metrics"]["test_accuracy"] <= 1.0 and meta["metrics"]["train_images_per_s"] > 0
    assert meta["parameters"] < 500_000 and (art / "model.keras").stat().st_size < 2_000_000  # no optimizer state

    # transfer to a 2-class NVSS set (miniature FR-DEEP layout): new head, first conv block frozen
    d = tmp_path / "NVSS_PNG_dataset"
    d.mkdir()
    rng = np.random.default_rng(2)
    for name, n in (("data_batch_1", 16), ("test_batch", 6)):
        batch = {"batch_label": name, "labels": [i % 2 for i in range(n)],
                 "data": [rng.integers(0, 255, 22500).astype(np.uint8) for _ in range(n)],
                 "filenames": [f"{i}.png" for i in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch))
    res2 = _train(TrainOptions(data=d, epochs=1, batch_size=8, out_root=out, from_model=str(art), freeze=2),
                  {"dataset": "frdeep-nvss", "name": "radio-nvss-tl", "patience": "0", "throughput": "false"})
    meta2 = json.loads((out / "radio-nvss-tl" / res2["version"] / "metadata.json").read_text())
    assert meta2["classes"] == ["FRI", "FRII"] and meta2["input_spec"]["survey"] == ["NVSS"]
    tl = meta2["training"]["transfer"]
    assert tl["frozen_layers"] == ["conv1", "bn1"] and tl["new_head"] and tl["from"] == "radio-first@0.0.1"

    with pytest.raises(StampflowError, match="--freeze needs --from"):
        _train(TrainOptions(data=data, epochs=1, freeze=1, out_root=out))
    # evaluate accepts the training output too (zipped/unzipped HDF5 is covered below with the bundled model)
    r = _evaluate(str(art), data, {"split": "all"})
    assert r["n"] == 32


@pytest.fixture(scope="module")
def bundled():
    from models.registry import Registry

    return Registry().resolve("radio-first")


def test_bundled_artifact_classifies_real_griese_valid(bundled, griese_valid):
    from models.cnn import KerasCNN
    from models.preprocess import prepare_images

    clf = KerasCNN.load(bundled)
    assert clf.classes == CLASSES and clf.input_spec.size == 150 and bundled.metadata["trained_on"] == "real"
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(griese_valid.labels == c))[:10] for c in range(4)])
    x = prepare_images(griese_valid.images[idx], clf.input_spec, 1.8)
    pred = clf.predict_batch(x)
    correct = np.mean([CLASSES.index(lbl) == y for lbl, y in zip(pred.labels, griese_valid.labels[idx])])
    assert correct >= 0.7, f"{correct:.2f} of 40 real Griese valid images right"
    assert pred.probabilities.shape == (40, 4) and np.all(pred.uncertainty >= 0)


@pytest.mark.parametrize("zipped", [False, True])
def test_evaluate_griese_zipped_or_not_and_split_subsets(tmp_path, bundled, griese_valid, zipped):
    data, labels = _tiny_griese(tmp_path, griese_valid, zipped=zipped, n_train=8, n_valid=8)
    r = _evaluate(str(bundled.path), data, {})
    assert r["data"]["split"] == "valid" and r["n"] == 8  # default: the published held-out part
    assert set(r["per_class"]) == set(CLASSES) and len(r["confusion_matrix"]["matrix"]) == 4
    assert sum(map(sum, r["confusion_matrix"]["matrix"])) == 8
    assert _evaluate(str(bundled.path), data, {"split": "train"})["n"] == 8
    assert _evaluate(str(bundled.path), data, {"split": "all"})["n"] == 16
    with pytest.raises(StampflowError, match="no 'test' split"):
        _evaluate(str(bundled.path), data, {"split": "test"})
    with pytest.raises(StampflowError, match="unknown evaluate option"):
        _evaluate(str(bundled.path), data, {"splt": "all"})


def test_evaluate_four_class_model_on_fri_frii_data(data_dir, bundled):
    r = _evaluate(str(bundled.path), data_dir / "radio/mirabest/batches.tar.gz", {})
    assert r["data"]["split"] == "test" and r["n"] == 88
    assert r["restricted_to"] == ["FRI", "FRII"] and list(r["per_class"]) == ["FRI", "FRII"]
    un = r["unrestricted"]["confusion_matrix"]
    assert un["column_labels"] == list(CLASSES) and np.sum(un["matrix"]) == 88
    # NVSS at 15"/px is not what a FIRST model takes: refused unless forced
    with pytest.raises(StampflowError, match="pixel scale"):
        _evaluate(str(bundled.path), data_dir / "radio/frdeep", {"survey": "NVSS"})
    forced = _evaluate(str(bundled.path), data_dir / "radio/frdeep", {"survey": "NVSS", "force": "true"})
    assert forced["n"] == 50 and forced["input_mismatch"]
