"""Run every benchmark: ``python -m benchmarks.run_all [--quick] [--json PATH] [--only NAME ...]``.

Why it exists: one command (``make bench``) that measures the project's cost claims on the machine it
runs on and prints raw timings next to ratios taken in the same run. Nothing is compared with numbers
from another machine.
See benchmarks/README.md for the protocol and recorded results.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from . import analyzer_time, certification, cli_startup, law_throughput, tracker_overhead
from .common import machine, now, section

BENCHMARKS = [tracker_overhead, analyzer_time, certification, law_throughput, cli_startup]


def _summary(results: dict) -> list[str]:
    lines = []
    r = results.get(tracker_overhead.NAME)
    if r:
        for key, w in r["widths"].items():
            t, p = w["tracked"], w["paper"]
            lines.append(f"tracker overhead ({key.replace('_', ' ')}, {w['groups']} groups): "
                         f"{t['ratio_paired_median']:.3f}x per step end to end, {t['ratio_hook']:.3f}x by hook time "
                         f"(goal <= {r['target']}x); paper buffers {p['ratio_paired_median']:.3f}x; pending records "
                         f"{w['memory_ratio_pending']:.4f}x params (goal <= 0.01), paper {w['memory_ratio_paper']:.1f}x")
    r = results.get(analyzer_time.NAME)
    if r:
        lines.append("analyze / fwd+bwd: " + ", ".join(f"{k} {v['ratio_analyze_over_fwd_bwd']:.2f}x "
                                                       f"({v['analyze_s']:.2f} s)" for k, v in r["models"].items()))
    r = results.get(certification.NAME)
    if r:
        lines.append(f"certification: {r['ratio']:.2f}x plain analyze, {r['per_symmetry_ms']:.3f} ms per symmetry "
                     f"({r['symmetries']} symmetries)")
    r = results.get(law_throughput.NAME)
    if r:
        lines.append(f"laws on [{r['config']['T'] + 1}, {r['config']['G']}] streamed: exact {r['exact']['seconds']:.2f} s, "
                     f"continuous {r['continuous']['seconds']:.2f} s (goal < {r['target_s']:g} s each), peak RSS "
                     f"{r['peak_rss_bytes'] / 2**20:.0f} MiB; finite: {r['all_finite']}")
    r = results.get(cli_startup.NAME)
    if r:
        c, f = r["commands"], r["run_files"]
        lines.append(f"cli: `nmech train --help` {c['train --help']['median_s']:.2f} s (max {c['train --help']['max_s']:.2f}; "
                     f"target < 1 s), `nmech --help` {c['--help']['median_s']:.2f} s; stats.bin read with CRC "
                     f"{f['crc_overhead_ratio']:.2f}x without ({f['verified_mb_per_s']:.0f} MB/s)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute in total")
    ap.add_argument("--json", metavar="PATH", help="also write all results (and the machine) as JSON")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=[b.NAME for b in BENCHMARKS],
                    help="run only these benchmarks")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: stable on a shared machine; 0 = torch's default)")
    args = ap.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    info = machine()
    mode = "quick" if args.quick else "full"
    print(f"neural-mechanics benchmarks ({mode}) -- {info['date']}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
          f"numpy {info['numpy']}, python {info['python']}, CUDA {'yes' if info['cuda'] else 'no'}")
    results, errors, t0 = {}, {}, now()
    for bench in BENCHMARKS:
        if args.only and bench.NAME not in args.only:
            continue
        with section(bench.NAME):
            t = now()
            try:
                results[bench.NAME] = bench.run(args.quick)
                results[bench.NAME]["wall_s"] = now() - t
            except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
                traceback.print_exc()
                errors[bench.NAME] = f"{type(exc).__name__}: {exc}"
    total = now() - t0
    print("\n=== summary (all numbers measured in this run) ===")
    for line in _summary(results):
        print("  " + line)
    for name, err in errors.items():
        print(f"  FAILED {name}: {err}")
    print(f"  total {total:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": mode, "machine": info, "total_s": total, "results": results, "errors": errors},
                      f, indent=2, default=float)
        print(f"  results written to {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
