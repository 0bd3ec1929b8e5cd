"""Rubin alerts through the real broker with no registry: every lsst-alert-packet version's sample alert, framed as
Rubin frames it, replayed in visit bursts (`replay --visit-size N --visit-interval S`), decoded by a worker through
the package's schemas and published."""
from __future__ import annotations

import fastavro
import pytest

from schemas.rubin import encode_rubin_alert, rubin_sample_alert, rubin_schema_versions
from stream.config import Settings
from stream.replay import VisitCadence, replay_messages
from tests.integration.conftest import decode_dead_letters, decode_results, read_topic

pytestmark = pytest.mark.integration

VERSIONS = rubin_schema_versions()


def test_rubin_visits_replayed_in_bursts_are_decoded_and_published(kafka_bootstrap, topics, start_worker, data_dir):
    with open(data_dir / "lsst_alerts" / "fink-client" / "part-2-918301.avro", "rb") as fh:
        real = next(fastavro.reader(fh))  # a real Rubin alert's three 30x30 cutouts
    values = []
    for major, minor in VERSIONS:
        sample = rubin_sample_alert(major, minor)
        values.append(encode_rubin_alert(sample, major, minor))  # as shipped: no cutouts
        with_stamps = {k: (real[k] if k.startswith("cutout") and k in sample else v) for k, v in sample.items()}
        values.append(encode_rubin_alert(with_stamps, major, minor))
    size, interval = 10, 1.0
    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap})
    stats = replay_messages(settings, ((None, v, f"rubin#{i}") for i, v in enumerate(values)), topics["input"],
                            progress=False, visit=VisitCadence(size, interval))
    assert stats["messages"] == len(values) == 30 and stats["visit_size"] == size
    visits = stats["visits"]
    assert [v["messages"] for v in visits] == [10, 10, 10] and stats["late_visits"] == 0
    gaps = [b["start_unix"] - a["start_unix"] for a, b in zip(visits, visits[1:])]
    assert all(interval - 0.05 <= g <= interval + 0.5 for g in gaps), gaps

    # On the broker: the message timestamps form three bursts, one visit interval apart.
    stamps = sorted(m.timestamp()[1] / 1000 for m in read_topic(kafka_bootstrap, topics["input"], expect=30))
    bursts = [stamps[i:i + size] for i in range(0, len(stamps), size)]
    assert all(b[-1] - b[0] < 0.5 for b in bursts), [b[-1] - b[0] for b in bursts]
    assert all(interval - 0.1 <= b[0] - a[0] <= interval + 0.5 for a, b in zip(bursts, bursts[1:]))
    assert abs(bursts[0][0] - visits[0]["start_unix"]) < 0.5  # the stats' visit start is the burst's first message

    worker = start_worker()  # no schema registry configured: Rubin's ids resolve from lsst-alert-packet
    worker.wait_metrics()
    results = decode_results(read_topic(kafka_bootstrap, topics["results"], expect=len(values), timeout=120))
    assert len(results) == len(values) and {r["survey"] for r in results} == {"LSST"}
    flags = sorted(tuple(r["flags"]) for r in results)
    # No Rubin model exists yet: every Rubin alert is decoded and published as unrouted.
    assert flags == sorted([("no_stamps", "unrouted")] * 15 + [("unrouted",)] * 15)
    assert decode_dead_letters(read_topic(kafka_bootstrap, topics["dead"], timeout=5, idle=2)) == []


def test_replay_of_alert_files_in_visits(kafka_bootstrap, topics, data_dir):
    """`stampflow replay PATHS --visit-size 4 --visit-interval 0.5` (the function behind it): the shared real Rubin
    alert files (7 + 1 + 1 alerts) go out as 4 + 4 + 1, half a second apart."""
    from stream.replay import replay

    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap})
    stats = replay(settings, [data_dir / "lsst_alerts"], topics["input"], progress=False,
                   visit=VisitCadence(4, 0.5))
    assert [v["messages"] for v in stats["visits"]] == [4, 4, 1] and stats["messages"] == 9
    starts = [v["start_unix"] for v in stats["visits"]]
    assert all(0.45 <= b - a <= 1.0 for a, b in zip(starts, starts[1:])), starts
    assert len(read_topic(kafka_bootstrap, topics["input"], expect=9, timeout=30)) == 9
