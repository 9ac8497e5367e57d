"""Every script in examples/ runs to the end (at a reduced size) and writes what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, timeout: int = 900) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_example_is_tested():
    scripts = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
    tested = {"own_training_loop.py", "analyze_huggingface.py"}
    assert set(scripts) == tested, "add a test for each new example"


def test_own_training_loop(tmp_path):
    out = run_example("own_training_loop.py", "--out", str(tmp_path / "run"), "--steps", "40")
    assert f"html report: {tmp_path / 'run' / 'report' / 'report.html'}" in out
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["train"]["batch_size"] == 64 and meta["steps_recorded"] == 41 and meta["closed"]
    evals = [json.loads(l) for l in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [32, 40]
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert report["steps"] == 40 and set(report["summary"]) == {"translation", "scale", "rescale"}
    assert "training.png" in report["figures"]
    text = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "generated CIFAR-shaped" in text and "linear warmup + cosine" in text


def test_analyze_huggingface(tmp_path):
    pytest.importorskip("transformers", reason="optional extra: pip install 'neural-mechanics[huggingface]'")
    out = run_example("analyze_huggingface.py", "--out", str(tmp_path / "vit"), "--hidden", "16", "--layers", "1")
    assert "symmetries: translation" in out and f"html report: {tmp_path / 'vit' / 'report.html'}" in out
    data = json.loads((tmp_path / "vit" / "report.json").read_text())
    counts = data["analysis"]["counts"]
    assert counts["translation"] == 16 + 1 and counts["rescale"] > 0   # classifier columns + bias; MLP hidden units
    assert any(r["layer"].endswith("mlp.fc1") and r["groups"]["rescale"] == 32 for r in data["layers"])
