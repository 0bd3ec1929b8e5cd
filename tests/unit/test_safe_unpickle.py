"""The restricted unpickler: real CIFAR-style radio batches load; anything that names a callable is refused."""
from __future__ import annotations

import os
import pickle
import subprocess
import tarfile

import numpy as np
import pytest

from schemas.errors import StampflowError
from training.safe_unpickle import UnsafePickleError, load_cifar_batch, safe_load, safe_loads


def _member(path, name) -> bytes:
    with tarfile.open(path) as tf:
        return tf.extractfile(name).read()


def test_reads_real_frdeep_batch(data_dir):
    raw = _member(data_dir / "radio/frdeep/FIRST_PNG_dataset.tar.gz", "FIRST_PNG_dataset/data_batch_1")
    batch = load_cifar_batch(raw, source="data_batch_1")
    assert batch["batch_label"] == "training batch 1 of 11"
    assert len(batch["data"]) == len(batch["labels"]) == len(batch["filenames"]) == 50
    assert set(batch["labels"]) == {0, 1} and batch["labels"].count(0) == 22
    img = np.asarray(batch["data"][0])
    assert img.dtype == np.uint8 and img.size == 150 * 150
    assert all(isinstance(n, str) and n.endswith(".png") for n in batch["filenames"])


def test_reads_real_mirabest_test_batch(data_dir):
    raw = _member(data_dir / "radio/mirabest/batches.tar.gz", "batches/test_batch")
    batch = load_cifar_batch(raw)
    assert len(batch["labels"]) == 88
    assert np.asarray(batch["data"][0]).shape == (150, 150)
    assert batch["filenames"][0].startswith("BestCat_proc/Cropped/1")


class _System:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class _Popen:
    def __reduce__(self):
        return (subprocess.Popen, (["true"],))


class _Eval:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload,qualname", [(_System(), "system"), (_Popen(), "Popen"), (_Eval(), "eval")])
def test_refuses_callables(payload, qualname, tmp_path):
    evil = pickle.dumps({"data": [payload], "labels": [0]})
    with pytest.raises(UnsafePickleError, match=rf"evil\.pkl.*{qualname}.*only numpy array reconstruction"):
        safe_loads(evil, source="evil.pkl")
    f = tmp_path / "data_batch_1"
    f.write_bytes(evil)
    with pytest.raises(UnsafePickleError):
        safe_load(f)
    # an UnsafePickleError is a StampflowError: the CLI prints it on one line
    assert issubclass(UnsafePickleError, StampflowError)


def test_refuses_object_arrays_and_codecs_other_than_latin1():
    with pytest.raises(UnsafePickleError, match="object-dtype"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object)))

    class Rot13:
        def __reduce__(self):
            import _codecs
            return (_codecs.encode, ("abc", "rot13"))

    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_loads(pickle.dumps(Rot13(), protocol=2))


def test_python2_style_batch_with_bytes_keys():
    # CIFAR batches written by Python 2 have bytes keys; protocol 2 spells bytes via _codecs.encode
    raw = pickle.dumps({b"data": np.arange(8, dtype=np.uint8).reshape(2, 4), b"labels": [1, 0],
                        b"filenames": [b"a.png", b"b.png"], b"batch_label": b"training batch 1 of 1"}, protocol=2)
    batch = load_cifar_batch(raw)
    assert batch["labels"] == [1, 0] and batch["filenames"] == ["a.png", "b.png"]
    assert np.asarray(batch["data"]).shape == (2, 4)


def test_not_a_batch():
    with pytest.raises(StampflowError, match="not a readable pickle"):
        safe_loads(b"definitely not a pickle", source="junk")
    with pytest.raises(StampflowError, match="not a CIFAR-style batch"):
        load_cifar_batch(pickle.dumps([1, 2, 3]))
    with pytest.raises(StampflowError, match="no labels"):
        load_cifar_batch(pickle.dumps({"data": []}))
    with pytest.raises(StampflowError, match="2 images but 1 labels"):
        load_cifar_batch(pickle.dumps({"data": [np.zeros(3), np.zeros(3)], "labels": [0]}))
