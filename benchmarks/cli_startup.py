"""How fast does the command line answer, and what do checksummed run files cost?

Why it exists: ``nmech train --help`` used to take 27 s on a loaded machine (torch imported before
parsing); the target is under a second. The timing lives here, not in a test, because a test asserting
it would fail on a loaded machine. The run-file half measures what the per-block CRC-32 of stats.bin
adds to reading a log (every block is verified on every read) and to each flush.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .common import median, now, progress, table

NAME = "cli_startup"
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["--version"], ["train", "--help"], ["laws", "--help"], ["analyze", "--help"],
            ["evaluate", "--help"], ["train", "--lr", "-1"])


def _wall(argv: list[str]) -> float:
    t = now()
    subprocess.run([sys.executable, "-m", "analyses.cli", *argv], cwd=ROOT, capture_output=True, timeout=300)
    return now() - t


def _run_files(records: int, record_size: int, block: int) -> dict[str, Any]:
    from symmetry_engine.numeric.runfile import RecordFile, crc_path, read_records

    data = np.random.default_rng(0).standard_normal((records, record_size))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stats.bin"
        f = RecordFile(path, record_size, keep=0)
        flushes = []
        for k in range(0, records, block):
            f.append(data[k:k + block])
            t = now()
            f.flush()
            flushes.append(now() - t)
        f.close()
        verified = [now()]
        for _ in range(3):
            read_records(path, record_size)
            verified.append(now())
        crc_path(path).rename(Path(d) / "moved.crc")   # the reader's unverified path: no checksums to check
        plain = [now()]
        for _ in range(3):
            read_records(path, record_size)
            plain.append(now())
        mb = path.stat().st_size / 2**20
    t_ver = median(list(np.diff(verified)))
    t_plain = median(list(np.diff(plain)))
    return {"megabytes": mb, "read_verified_s": t_ver, "read_unverified_s": t_plain,
            "crc_overhead_ratio": t_ver / t_plain, "verified_mb_per_s": mb / t_ver,
            "flush_median_s": median(flushes), "block_records": block}


def run(quick: bool) -> dict[str, Any]:
    repeats = 3 if quick else 5
    rows, out = [], {}
    t = now()
    subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, timeout=300)
    torch_import = now() - t
    for argv in COMMANDS:
        times = [_wall(argv) for _ in range(repeats)]
        key = " ".join(argv)
        out[key] = {"median_s": median(times), "max_s": max(times)}
        rows.append([f"nmech {key}", median(times), max(times)])
        progress(f"nmech {key}: {median(times):.3f} s")
    print(table(rows, ["command", "median s", "max s"]))
    print(f"  reference: a bare `python -c 'import torch'` took {torch_import:.2f} s in this run")
    files = _run_files(2000 if quick else 20000, 2000, 50)
    print(f"  stats.bin of {files['megabytes']:.0f} MB ({files['block_records']} records per block): read with "
          f"CRC check {files['read_verified_s']:.3f} s ({files['verified_mb_per_s']:.0f} MB/s), without "
          f"{files['read_unverified_s']:.3f} s ({files['crc_overhead_ratio']:.2f}x); flush of a block "
          f"{files['flush_median_s'] * 1e3:.1f} ms (two fsyncs)")
    return {"commands": out, "torch_import_s": torch_import, "run_files": files, "repeats": repeats,
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
