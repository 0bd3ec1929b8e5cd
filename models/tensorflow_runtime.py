"""TensorFlow for the CNN families, imported once and quietly, and what it runs on (`device_summary`).

Which CPU kernels it uses is decided before this import, in models/__init__.py (oneDNN on by default).
"""
from __future__ import annotations

from typing import Any


def tensorflow():
    """Import TensorFlow quietly (its C++ start-up chatter is not ours to show)."""
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    # TF_CPP_MIN_LOG_LEVEL does not reach the lines TensorFlow logs before absl is initialised, among them an INFO
    # line saying oneDNN is on (models/__init__.py turns it on), which would open every command's output. The
    # import's own stderr goes to a file, and every line of it but those two INFO lines is passed on.
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors="replace")
    kept = [line for line in text.splitlines()
            if line.strip() and not line.startswith("WARNING: All log messages before absl::InitializeLog()")
            and not (line.startswith("I0000") and "oneDNN custom operations are on" in line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    return tf


def device_summary() -> dict[str, Any]:
    """Which device TensorFlow will use: the first GPU if any, else the CPU."""
    tf = tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"device": "GPU", "name": details.get("device_name", gpus[0].name), "count": len(gpus)}
    return {"device": "CPU", "name": "cpu", "count": 0, "onednn": onednn_enabled()}


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (fixed at import: models/__init__.py)."""
    tensorflow()
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own answer; no public API says it

    return bool(_pywrap_util_port.IsMklEnabled())
