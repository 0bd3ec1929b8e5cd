"""`stampflow serve` runs OpenBLAS with `models.blas_threads` threads (default 1): its extra threads spin while
they wait and cost a worker ~37% more CPU per alert. Checked in child interpreters, since OpenBLAS reads the
limit once, when numpy loads it."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from stream.config import Settings


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_limit_applies_before_numpy_loads_openblas():
    out = _run("""
        import os
        from stream.cli import limit_blas_threads
        limit_blas_threads(1)
        import numpy as np
        a = np.random.default_rng(0).random((400, 400))
        a @ a  # a product large enough for OpenBLAS to use its threads, if it had any
        print(len(os.listdir("/proc/self/task")), os.environ["OPENBLAS_NUM_THREADS"])
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1"]  # no thread but the main one


def test_limit_after_numpy_is_reported_not_applied():
    out = _run("""
        import os, numpy
        from stream.cli import limit_blas_threads
        print(limit_blas_threads(1), "OPENBLAS_NUM_THREADS" in os.environ)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]
    assert "numpy is already loaded" in out.stderr


def test_setting_defaults_to_one_and_zero_keeps_openblas_default(monkeypatch):
    assert Settings().models.blas_threads == 1
    monkeypatch.setenv("STAMPFLOW_MODELS__BLAS_THREADS", "0")
    assert Settings().models.blas_threads == 0
    monkeypatch.setenv("STAMPFLOW_MODELS__BLAS_THREADS", "-1")
    with pytest.raises(ValueError):  # pydantic's ValidationError
        Settings()
