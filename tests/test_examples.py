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
    tested = {"own_training_loop.py", "analyze_huggingface.py", "evaluate_checkpoints.py"}
    assert set(scripts) == tested, "add a test for each new example"


def test_own_training_loop(tmp_path):
    out = run_example("own_training_loop.py", "--out", str(tmp_path / "run"), "--steps", "40",
                      *(["--tensorboard", str(tmp_path / "tb")] if _have_tensorboard() else []))
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
    # three param groups with their own hyper-parameters: three member classes, the head at a tenth of the lr
    classes = report["optimizer"]["classes"]
    assert len(classes) == 3 and classes[2]["lr"]["max"] == pytest.approx(0.1 * classes[0]["lr"]["max"], rel=1e-6)
    assert classes[1]["weight_decay"]["max"] == 0.0 and classes[0]["weight_decay"]["max"] == 5e-4
    assert "samples.bin" in text and (tmp_path / "run" / "samples.bin").stat().st_size > 0   # Figure 1, every step
    if _have_tensorboard():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
        acc.Reload()
        loss = {e.step: e.value for e in acc.Scalars("train/loss")}
        assert sorted(loss) == list(range(40)) and loss[39] > 0


def _have_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def test_evaluate_checkpoints_saved_without_the_tracker(tmp_path):
    out = run_example("evaluate_checkpoints.py", "--out", str(tmp_path / "ck"), "--steps", "40", "--every", "10",
                      "--milestone", "20", "--replica-steps", "4")
    assert out.splitlines()[0].startswith("5 checkpoints, steps 0..40; verdicts:") and " 0 broken" in out
    assert f"html report: {tmp_path / 'ck' / 'report' / 'report.html'}" in out
    assert not (tmp_path / "ck" / "run.json").exists()   # no tracker was attached
    report = json.loads((tmp_path / "ck" / "report" / "report.json").read_text())
    assert report["source"] == "checkpoints" and report["summary"]["translation"]["law"]["max"] < 1e-9
    assert report["estimation"]["replica_steps"] == 4 and len(report["estimation"]["checkpoints"]) == 5
    assert report["summary"]["scale"]["approx"]["max"] < 0.5 and "approximate: estimated from checkpoints" in out
    assert not [w for w in report["warnings"] if "the flags give" in w], report["warnings"]   # the schedule is StepLR's
    md = (tmp_path / "ck" / "report" / "report.md").read_text()
    assert md.startswith("# Checkpoint evaluation") and "conservation.png" in md


def test_analyze_huggingface(tmp_path):
    pytest.importorskip("transformers", reason="optional extra: pip install 'neural-mechanics[huggingface]'")
    out = run_example("analyze_huggingface.py", "--out", str(tmp_path / "vit"), "--hidden", "16", "--layers", "1")
    assert "symmetries: translation" in out and f"html report: {tmp_path / 'vit' / 'report.html'}" in out
    data = json.loads((tmp_path / "vit" / "report.json").read_text())
    counts = data["analysis"]["counts"]
    assert counts["translation"] == 16 + 1 and counts["rescale"] > 0   # classifier columns + bias; MLP hidden units
    assert any(r["layer"].endswith("mlp.fc1") and r["groups"]["rescale"] == 32 for r in data["layers"])
