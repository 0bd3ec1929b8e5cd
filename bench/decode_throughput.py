"""Decoder throughput on the shared real alerts, one core, in process. Reports; never asserts.

Measures:
  1. decode-only alerts/s per engine (``codegen``: the generated projection reader; ``fastavro``: the
     projection through ``fastavro.schemaless_reader``; ``auto``: codegen with the fastavro fallback, what the
     worker runs): container header, schema cache, projected record, `Packet`, stamps left compressed;
  2. the same with the science stamp decoded to float32 (what the star/galaxy model needs);
  3. Parquet: ms per row through `FileSource` end to end, and the row encoders (generated writer vs fastavro's
     ``schemaless_writer``) on one Fink file.

`bench/run_pipeline_bench.py` takes its decode columns from `load_alert_bytes` and `bench_decode` here.

    .venv/bin/python bench/decode_throughput.py [--seconds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import fastavro  # noqa: E402

from schemas.packet import DeadLetter, Origin, RawMessage, StampKind  # noqa: E402
from stream.config import data_root  # noqa: E402
from stream.decode import Decoder  # noqa: E402
from stream.decode.arrow import RowWriter, parquet_avro_schema, rename_row  # noqa: E402
from stream.file_source import FileSource  # noqa: E402

#: the Fink file whose rows the row-encoder comparison uses (72 rows with their 30-epoch histories)
PARQUET_SAMPLE = "part-0-0-435829.parquet"


def load_alert_bytes() -> list[bytes]:
    """Every decodable real ZTF alert with a science stamp in the shared data, one ZTF-framed message each."""
    dec = Decoder()
    out = []
    for item in FileSource([data_root() / "ztf_alerts"]).iter_messages():
        if isinstance(item, DeadLetter):
            continue
        try:
            p = dec.decode(RawMessage(item.value, item.origin))
        except Exception:
            continue
        if p.survey == "ZTF" and StampKind.SCIENCE in p.stamps:
            out.append(item.value)
    return out


def bench_decode(msgs: list[bytes], seconds: float = 3.0) -> dict:
    """Decode-only and decode + science stamp alerts/s (engine "auto", wall clock over ``seconds`` each)."""
    dec = Decoder()
    origin = Origin(topic="bench", partition=0, offset=0)
    res = {}
    for label, with_stamp in (("decode_only_alerts_per_s", False), ("decode_with_science_stamp_alerts_per_s", True)):
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for m in msgs:
                p = dec.decode(RawMessage(m, origin))
                if with_stamp:
                    p.stamps[StampKind.SCIENCE].image()
            n += len(msgs)
        res[label] = round(n / (time.perf_counter() - t0), 1)
    return res


def bench_engines(msgs: list[bytes], seconds: float = 3.0, prefix: str = "") -> dict:
    """Decode-only alerts/s per engine, CPU time of this process (one core), after one warm-up pass that
    compiles each writer schema's generated reader."""
    origin = Origin(topic="bench", partition=0, offset=0)
    res = {}
    for engine in ("codegen", "fastavro"):
        dec = Decoder(engine=engine)
        for m in msgs:
            dec.decode(RawMessage(m, origin))
        n = 0
        t0 = time.process_time()
        while time.process_time() - t0 < seconds:
            for m in msgs:
                dec.decode(RawMessage(m, origin))
            n += len(msgs)
        res[f"{prefix}{engine}_alerts_per_s"] = round(n / (time.process_time() - t0), 1)
    return res


def bench_parquet() -> dict:
    """ms per Parquet row end to end (FileSource over every shared Parquet file) and per row encoding."""
    import pyarrow.parquet as pq

    directory = data_root() / "ztf_alerts" / "fink-science"
    list(FileSource(directory))  # warm up
    t0 = time.process_time()
    n = len(list(FileSource(directory)))
    per_row = (time.process_time() - t0) / n * 1e3
    path = directory / PARQUET_SAMPLE
    pf = pq.ParquetFile(path)
    target, schema, plan = parquet_avro_schema(pf.schema_arrow, path)
    rows = pf.read().cast(target).to_pylist()
    writer = RowWriter(schema, plan)
    t0 = time.process_time()
    for row in rows:
        writer.fast(row)
    fast = (time.process_time() - t0) / len(rows) * 1e3
    t0 = time.process_time()
    for row in rows:
        fastavro.schemaless_writer(io.BytesIO(), writer.parsed, rename_row(row, plan) if plan else row)
    slow = (time.process_time() - t0) / len(rows) * 1e3
    return {"parquet_rows": n, "parquet_ms_per_row": round(per_row, 3),
            "row_encode_generated_ms": round(fast, 4), "row_encode_fastavro_ms": round(slow, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    msgs = load_alert_bytes()
    report: dict = {"alerts": len(msgs)}
    report.update(bench_engines(msgs, args.seconds))
    report.update(bench_decode(msgs, args.seconds))
    # the real Rubin alerts of the visit benchmark (whole histories: hundreds of rows each to skip)
    from bench.visit_alerts import rubin_alerts
    report.update(bench_engines(rubin_alerts(), args.seconds, prefix="rubin_"))
    report.update(bench_parquet())
    print(f"[decode] {len(msgs)} ZTF alerts, one core: codegen {report['codegen_alerts_per_s']:,.0f}/s, "
          f"fastavro projection {report['fastavro_alerts_per_s']:,.0f}/s (no stamps); "
          f"auto {report['decode_only_alerts_per_s']:,.0f}/s, "
          f"with the science stamp {report['decode_with_science_stamp_alerts_per_s']:,.0f}/s")
    print(f"[decode] 7 real Rubin 10.0 alerts (Confluent framing, 120-300 kB with histories), one core: codegen "
          f"{report['rubin_codegen_alerts_per_s']:,.0f}/s, fastavro projection {report['rubin_fastavro_alerts_per_s']:,.0f}/s")
    print(f"[parquet] {report['parquet_ms_per_row']:.2f} ms/row end to end ({report['parquet_rows']} rows); "
          f"row encoding {report['row_encode_generated_ms']:.3f} ms generated vs "
          f"{report['row_encode_fastavro_ms']:.3f} ms fastavro")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
