"""A restricted unpickler for CIFAR-style batches (FR-DEEP, MiraBest): numpy arrays and plain containers only.

The published radio data sets ship as Python pickles (a dict with ``data``, ``labels``, ``filenames`` and
``batch_label``, keys possibly ``bytes``). A plain ``pickle.load`` would run whatever callable the file names,
so `RestrictedUnpickler.find_class` resolves only the few globals numpy needs to rebuild an array, a dtype and
a numpy scalar; anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
`UnsafePickleError` before it can be called. Dicts, lists, tuples, str, bytes, int, float, bool and None are
pickle opcodes, not globals, so they need no entry; protocol-2 pickles spell bytes, sets and bytearrays through
``_codecs.encode(text, "latin1")`` and ``builtins.set/frozenset/bytearray``, which are allowed (``_codecs.encode``
only with the latin-1 codec that pickle itself uses).

Arrays with an object dtype are refused after loading: their elements came through the same restricted
unpickler, but nothing we read needs them and refusing keeps the contract to "numbers and strings".
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from schemas.errors import StampflowError


class UnsafePickleError(StampflowError):
    """The pickle names a global outside the allow-list, or holds something other than plain data."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with codec {encoding!r} (only latin-1 is used by pickle)")
    return text.encode("latin-1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1.x name the old module. Resolve both
    # to the new objects directly, so loading never touches the deprecated numpy.core shim.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        # numpy scalars (e.g. the numpy.str_ file names in FR-DEEP/MiraBest batches) pickle via scalar(dtype, bytes)
        table[(module, "scalar")] = multiarray.scalar
    table[("_codecs", "encode")] = _latin1_encode
    for name, obj in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray), ("complex", complex)):
        table[("builtins", name)] = obj
        table[("__builtin__", name)] = obj
    return table


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `ALLOWED_GLOBALS`; ``source`` names the file in error messages."""

    def __init__(self, file: BinaryIO, *, source: str = "<bytes>", encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to unpickle {self.source}: it references {module}.{name}, and only "
                                    "numpy array reconstruction is allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to unpickle {self.source}: it uses persistent ids")


def _check_plain(obj: Any, source: str, depth: int = 0) -> None:
    if depth > 50:
        raise UnsafePickleError(f"refusing {source}: nesting deeper than 50 levels")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickleError(f"refusing {source}: it holds an object-dtype array")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, source, depth + 1)
            _check_plain(v, source, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_plain(v, source, depth + 1)
    elif not isinstance(obj, (str, bytes, bytearray, int, float, complex, bool, type(None), np.generic)):
        raise UnsafePickleError(f"refusing {source}: unexpected {type(obj).__name__} object")


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with `RestrictedUnpickler`.

    Python 3 pickles are read with ``encoding="bytes"``; a Python 2 pickle (whose str fields cannot be decoded
    that way into numpy arrays) is retried with ``latin1``, which is what numpy documents for such files.
    """
    last: Exception | None = None
    for encoding in ("bytes", "latin1"):
        try:
            obj = RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, UnicodeDecodeError, IndexError,
                KeyError, AttributeError, OverflowError, MemoryError) as exc:
            last = exc
            continue
        _check_plain(obj, source)
        return obj
    raise StampflowError(f"{source} is not a readable pickle: {last.__class__.__name__}: {last}")


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` with `RestrictedUnpickler` (see `safe_loads`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise StampflowError(f"cannot read {p}: {exc.strerror or exc}") from None
    return safe_loads(data, source=str(p))


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return str(value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value)


def load_cifar_batch(data: bytes, *, source: str = "<bytes>") -> dict[str, Any]:
    """One CIFAR-style batch -> ``{"data": [array...], "labels": [int...], "filenames": [str...], "batch_label": str}``.

    Keys are normalised to ``str`` (Python 2 batches use ``bytes`` keys); ``data`` stays as stored (a list of
    arrays or one (N, D) array: the caller reshapes); raises `StampflowError` if ``data`` or ``labels`` is missing
    or their lengths differ.
    """
    obj = safe_loads(data, source=source)
    if not isinstance(obj, dict):
        raise StampflowError(f"{source} is not a CIFAR-style batch (a {type(obj).__name__}, not a dict)")
    batch = {_text(k): v for k, v in obj.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise StampflowError(f"{source} is not a CIFAR-style batch: no {', '.join(missing)} key "
                             f"(keys: {', '.join(sorted(batch))})")
    labels = [int(v) for v in batch["labels"]]
    n_data = len(batch["data"])
    if n_data != len(labels):
        raise StampflowError(f"{source}: {n_data} images but {len(labels)} labels")
    names = batch.get("filenames")
    filenames = [_text(v) for v in names] if names is not None else [f"{i}" for i in range(n_data)]
    if len(filenames) != n_data:
        raise StampflowError(f"{source}: {n_data} images but {len(filenames)} file names")
    return {"data": batch["data"], "labels": labels, "filenames": filenames,
            "batch_label": _text(batch.get("batch_label", ""))}
