"""The peer in `make bench`: AMPEL's ZTF alert loading, as its users run it, on the same real ZTF alerts.

AMPEL (``ampel-ztf`` on PyPI) reads ZTF alerts through ``ZiAlertSupplier``: an alert loader yields each alert's
bytes, ``fastavro.reader`` deserialises the whole record (stamps and history included), and ``shape_alert_dict``
turns it into an ``AmpelAlert`` (candidate and previous detections as read-only data points, upper limits
filtered). This is the configuration AMPEL's own helper ``ampel.ztf.dev.ZTFAlert.to_alert`` uses: ``deserialize=
"avro"`` with a ``FileAlertLoader`` over alert files (registered by name as a loaded AMPEL context, or
``DevAmpelContext.register_unit``, registers it; building a whole AMPEL configuration would add nothing measured). The peer here feeds it the `make bench` alerts, one file per
alert, in repeated passes, and counts alerts/s (wall clock, one process, one core). It only loads alerts: no stamp
is decoded and no model runs, so the comparison with stampflow's end to end (which also classifies and publishes
through Kafka) flatters the peer.

AMPEL is installed from PyPI, pinned, into its own venv under ``.cache/peer/ampel`` (never into the project's):
its packages pin versions the project does not use.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".cache" / "peer" / "ampel"
PACKAGE = "ampel-ztf==0.10.2"

#: Runs inside the peer venv: argv = alert directory, seconds. Prints one JSON line.
_PEER = r'''
import json, sys, time
from pathlib import Path
from ampel.alert.load.FileAlertLoader import FileAlertLoader
from ampel.base.AuxUnitRegister import AuxUnitRegister
from ampel.model.UnitModel import UnitModel
from ampel.ztf.alert.ZiAlertSupplier import ZiAlertSupplier

# What a loaded AMPEL context (or DevAmpelContext.register_unit) does for an auxiliary unit: make it known by name.
AuxUnitRegister._dyn["FileAlertLoader"] = FileAlertLoader

files = sorted(str(p) for p in Path(sys.argv[1]).glob("*.avro"))
seconds = float(sys.argv[2])
ok = failed = 0
t0 = time.perf_counter()
while time.perf_counter() - t0 < seconds:
    supplier = ZiAlertSupplier(deserialize="avro", loader=UnitModel(unit="FileAlertLoader", config={"files": files}))
    while True:
        try:
            alert = next(supplier)
        except StopIteration:
            break
        except Exception:  # an alert AMPEL's supplier cannot shape (schema it does not know): counted, skipped
            failed += 1
            continue
        ok += 1
elapsed = time.perf_counter() - t0
print(json.dumps({"peer_alerts_per_s": round(ok / elapsed, 1), "peer_alerts": ok, "peer_failed": failed}))
'''


def ensure_venv() -> Path:
    """The peer venv's python, built once (``python3.11 -m venv`` + pinned ``pip install``)."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists() or stamp.read_text().strip() != PACKAGE:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", PACKAGE], check=True)
        stamp.write_text(PACKAGE + "\n")
    return py


def bench_peer(msgs: list[bytes] | None = None, seconds: float = 10.0) -> dict:
    """AMPEL's ZiAlertSupplier over the `make bench` alerts: ``{"peer": ..., "peer_alerts_per_s": ...}``; on a
    machine where the peer cannot be installed, the reason instead of a rate."""
    from bench.decode_throughput import load_alert_bytes

    msgs = msgs if msgs is not None else load_alert_bytes()
    try:
        py = ensure_venv()
    except (subprocess.CalledProcessError, OSError) as exc:
        return {"peer": PACKAGE, "peer_alerts_per_s": None, "peer_error": f"cannot install {PACKAGE}: {exc}"}
    with tempfile.TemporaryDirectory(prefix="peer-alerts-") as d:
        for i, m in enumerate(msgs):
            Path(d, f"{i:05d}.avro").write_bytes(m)
        out = subprocess.run([str(py), "-c", _PEER, d, str(seconds)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"peer": PACKAGE, "peer_alerts_per_s": None, "peer_error": out.stderr.strip().splitlines()[-1:]}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {"peer": f"AMPEL {PACKAGE} ZiAlertSupplier", **res}


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    print(json.dumps(bench_peer(), indent=2))
