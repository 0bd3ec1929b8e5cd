"""The rows `run_pipeline_bench.py` adds to BENCHMARKS.md: one per table it measured, newest first under the
table's header line (a table missing from the file is appended with its header)."""
from __future__ import annotations

import argparse
from pathlib import Path

PIPELINE_HEADER = ("| date | machine | messages | e2e alerts/s | p50 s | p99 s | steady p99 s | decode-only /s/core | "
                   "decode+stamp /s/core | naive loop /s | peak RSS MB |")
RATIOS_HEADER = ("| date | machine | load 1m | workers | e2e alerts/s | naive loop /s | peer | peer /s | "
                 "e2e ÷ naive | e2e ÷ peer | decode-only ÷ peer |")
VISITS_HEADER = ("| date | machine | load 1m | workers | mix (ZTF / Rubin) | visit | alerts | 98% within s | "
                 "100% within s | classified | unrouted |")


def _rule(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1) + "\n"


def _insert(text: str, title: str, header: str, rows: list[str]) -> str:
    marker = header + "\n" + _rule(header)
    if marker in text:
        return text.replace(marker, marker + "".join(rows), 1)
    return text.rstrip("\n") + f"\n\n{title}\n\n" + marker + "".join(rows)


def append_rows(path: Path, report: dict, args: argparse.Namespace) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    machine = report["machine"]
    load = report.get("load_average_1m_start")
    if "end_to_end_alerts_per_s" in report:
        row = (f"| {report['date']} | {machine}, {args.model} | {report['messages']} | "
               f"{report['end_to_end_alerts_per_s']} | {report['latency_p50_s']} | {report['latency_p99_s']} | "
               f"{report['latency_steady_p99_s']} | {report['decode_only_alerts_per_s']} | "
               f"{report['decode_with_science_stamp_alerts_per_s']} | {report['naive_loop_alerts_per_s']} | "
               f"{report['worker_peak_rss_mb']} |\n")
        text = _insert(text, "## Pipeline", PIPELINE_HEADER, [row])
        peer = report.get("peer", "–")
        row = (f"| {report['date']} | {machine}, {args.model} | {load} | {report['workers']} | "
               f"{report['end_to_end_alerts_per_s']} | {report['naive_loop_alerts_per_s']} | {peer} | "
               f"{report.get('peer_alerts_per_s', '–')} | {report['end_to_end_vs_naive']} | "
               f"{report.get('end_to_end_vs_peer', '–')} | {report.get('decode_only_vs_peer', '–')} |\n")
        text = _insert(text, "## End to end against the naive loop and a broker package (`make bench`)",
                       RATIOS_HEADER, [row])
    visit = report.get("visit")
    if visit:
        mix = f"{visit['mix']['ztf_share']:.0%} / {visit['mix']['rubin_share']:.0%}"
        rows = [f"| {report['date']} | {machine}, {visit['model']} | {visit['load_average_1m_start']:.1f} | "
                f"{visit['workers']} | {mix} | {v['visit']} | {v['alerts']} | {v['t98_s'] if v['t98_s'] is not None else '–'} | "
                f"{v['t100_s'] if v['t100_s'] is not None else '–'} | {v['classified']} | {v['unrouted']} |\n"
                for v in visit["visits"]]
        text = _insert(text, "## Rubin visits (`make bench`, `bench/visit_bench.py`)", VISITS_HEADER, rows)
    path.write_text(text)
