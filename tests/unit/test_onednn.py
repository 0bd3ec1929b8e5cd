"""TensorFlow's oneDNN CPU kernels are on by default (models/__init__.py): TensorFlow itself enables them only on
CPUs with AVX-512 VNNI/BF16 or AMX, and its Eigen fallback ran radio-first ~2.2x slower on this project's AVX2
machines. Checked in child interpreters, since TensorFlow reads the switch once, at import."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np


def _run(code: str, **env: str) -> list[str]:
    child_env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    child_env.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180,
                         env=child_env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_models_turns_onednn_on_before_tensorflow_loads():
    assert _run("""
        import models
        from models.tensorflow_runtime import onednn_enabled
        print(onednn_enabled())
    """) == ["True"]


def test_the_environment_can_keep_eigen():
    assert _run("""
        import training  # imports models first
        from models.tensorflow_runtime import device_summary
        print(device_summary()["onednn"])
    """, TF_ENABLE_ONEDNN_OPTS="0") == ["False"]


def test_the_setting_applies_before_import_and_warns_after():
    assert _run("""
        import logging, os
        logging.basicConfig(level=logging.WARNING)
        from stream.cli import choose_onednn
        print(choose_onednn(None), os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"))
        print(choose_onednn(False), os.environ["TF_ENABLE_ONEDNN_OPTS"])
        from models.tensorflow_runtime import onednn_enabled
        print(onednn_enabled(), choose_onednn(True), choose_onednn(False))
    """) == ["False", "unset", "True", "0", "False", "False", "False"]


def test_both_kernels_give_the_same_radio_outputs(tmp_path):
    """The bundled radio network on the same stamps under oneDNN and under Eigen: the same labels and
    probabilities within float32 rounding of a different summation order."""
    code = """
        import sys, numpy as np
        from models.registry import Registry
        clf = Registry().load("radio-first@1.0.0")
        rng = np.random.default_rng(3)
        x = np.zeros((64, 150, 150, 1), np.float32)
        x[:, 50:100, 60:90, 0] = rng.random((64, 50, 30)) ** 4 * 255
        np.save(sys.argv[1], clf.predict_batch(x).probabilities)
    """
    outs = []
    for flag in ("0", "1"):
        path = tmp_path / f"p{flag}.npy"
        env = {k: v for k, v in os.environ.items()}
        env.update(TF_ENABLE_ONEDNN_OPTS=flag, TF_CPP_MIN_LOG_LEVEL="3")
        run = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(path)], capture_output=True,
                             text=True, timeout=180, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        outs.append(np.load(path))
    assert np.array_equal(outs[0].argmax(1), outs[1].argmax(1))
    assert np.abs(outs[0] - outs[1]).max() < 1e-4


def test_importing_tensorflow_with_onednn_says_nothing():
    """TensorFlow logs 'oneDNN custom operations are on' before absl is initialised, where TF_CPP_MIN_LOG_LEVEL
    does not reach; `tensorflow()` keeps that line (and absl's note about it) out of every command's output."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-c", "from models.tensorflow_runtime import tensorflow; "
                          "from models.tensorflow_runtime import onednn_enabled; print(onednn_enabled())"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True"]
    assert out.stderr == ""
