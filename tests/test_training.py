"""Training loop: schedules, checkpoint policy, tracked run directory, exact resume (also after SIGKILL)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from model_zoo.presets import PRESETS
from model_zoo.train_cli import add_train_arguments, config_from_args, run_train
from model_zoo.training import TrainConfig, TrainingError, checkpoint_schedule, list_checkpoints, lr_at, train

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(model="convnet", model_kwargs={"width": 0.125}, dataset="synthetic", input_size=8, batch_size=64,
            steps=24, lr=0.05, momentum=0.9, weight_decay=5e-4, deterministic=True, progress=False,
            checkpoint_every=8, seed=3)


def _cfg(out, **kw) -> TrainConfig:
    return TrainConfig(out=str(out), **{**BASE, **kw})


def test_lr_schedules() -> None:
    c = TrainConfig(lr=0.1, schedule="step", lr_milestones=(10, 20), lr_gamma=0.5)
    assert [lr_at(c, s, 30) for s in (0, 9, 10, 25)] == [0.1, 0.1, 0.05, 0.025]
    c = TrainConfig(lr=0.2, schedule="cosine", warmup_steps=4)
    assert lr_at(c, 0, 104) == pytest.approx(0.05) and lr_at(c, 3, 104) == pytest.approx(0.2)
    assert lr_at(c, 54, 104) == pytest.approx(0.1) and lr_at(c, 104, 104) == pytest.approx(0.0)
    with pytest.raises(TrainingError):
        lr_at(TrainConfig(schedule="exp"), 0, 10)


def test_checkpoint_policies() -> None:
    assert checkpoint_schedule(TrainConfig(checkpoint_every=10), 35) == [10, 20, 30, 35]
    assert checkpoint_schedule(TrainConfig(checkpoint_steps=(0, 5, 99)), 20) == [0, 5, 20]
    assert checkpoint_schedule(TrainConfig(checkpoint_log=4), 1000) == [1, 10, 100, 1000]


def test_tracked_run_directory(tmp_path) -> None:
    res = train(_cfg(tmp_path / "run"))
    run = tmp_path / "run"
    meta = json.loads((run / "run.json").read_text())
    assert meta["closed"] and meta["steps_recorded"] == 25 and meta["model"]["spec"] == "convnet"
    assert meta["model"]["input_shape"] == [3, 8, 8] and meta["model"]["loss"] == "cross_entropy"
    assert meta["optimizer"]["momentum"] == 0.9 and meta["optimizer"]["weight_decay"] == 5e-4
    kinds = {s["kind"] for s in meta["symmetries"]}
    assert kinds == {"translation", "rescale"}  # convnet without BN
    from symmetry_engine.numeric.runlog import read_run

    rec = np.fromfile(run / "stats.bin", dtype="<f8").reshape(25, meta["record_size"])
    assert rec[:24, 0].tolist() == list(range(24)) and np.allclose(read_run(run).lrs, 0.05)
    assert list_checkpoints(run) == [8, 16, 24] == res.checkpoints
    ck = torch.load(run / "checkpoints" / "step_00000016.pt", weights_only=False)
    # 819 training samples / batch 64 = 12 steps per epoch
    assert ck["step"] == 16 and ck["tracker"]["step"] == 16 and (ck["data"]["epoch"], ck["data"]["index"]) == (1, 4)
    assert set(ck) >= {"model", "optimizer", "rng", "meta"}
    evals = [json.loads(l) for l in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [12, 24] and 0 <= evals[-1]["test_accuracy"] <= 1


def _final(run: Path):
    ck = torch.load(run / "checkpoints" / f"step_{24:08d}.pt", weights_only=False)
    return ck["model"], (run / "stats.bin").read_bytes(), (run / "eval.jsonl").read_text()


def test_resume_after_sigkill_is_bit_identical(tmp_path) -> None:
    ref = tmp_path / "ref"
    train(_cfg(ref))
    run = tmp_path / "killed"
    # the same command on the same machine: the child uses this process's intra-op thread count
    # (reductions, and so the bits, depend on it)
    script = textwrap.dedent(f"""
        import os, signal, sys
        import torch
        torch.set_num_threads({torch.get_num_threads()})
        import model_zoo.training as T
        orig = T.lr_at
        def lr_at(cfg, step, total):
            if step == 13:  # mid-epoch 1, after the checkpoint at step 8 (epoch 0), before the one at 16
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(cfg, step, total)
        T.lr_at = lr_at
        T.train(T.TrainConfig(out={str(run)!r}, **{BASE!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert list_checkpoints(run) == [8]
    res = train(_cfg(run))  # the same command again resumes
    assert res.resumed_from == 8
    m_ref, stats_ref, eval_ref = _final(ref)
    m_run, stats_run, eval_run = _final(run)
    assert all(torch.equal(m_ref[k], m_run[k]) for k in m_ref)
    assert stats_ref == stats_run
    assert eval_ref == eval_run
    assert json.loads((run / "run.json").read_text())["closed"]
    again = train(_cfg(run))  # a finished run is left alone
    assert again.resumed_from == 24 and (run / "stats.bin").read_bytes() == stats_ref


def test_nan_loss_stops_with_one_line_and_keeps_files(tmp_path) -> None:
    run = tmp_path / "nan"
    with pytest.raises(TrainingError) as err:
        train(_cfg(run, lr=1e6, momentum=0.0, steps=60, checkpoint_every=2))
    msg = str(err.value)
    assert "\n" not in msg and ("loss is nan" in msg.lower() or "loss is inf" in msg.lower())
    step = int(msg.split(" at step ")[1].split(";")[0])
    meta = json.loads((run / "run.json").read_text())
    assert not meta["closed"]
    rec = np.fromfile(run / "stats.bin", dtype="<f8").reshape(-1, meta["record_size"])
    assert rec.shape[0] == step and rec[-1, 0] == step - 1  # every step before the NaN is logged


def _parse(argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p.parse_args(argv)


def test_cli_presets_and_flags(tmp_path, capsys) -> None:
    assert {"digits-small", "paper-vgg16-bn-wd5e-4-m0.9", "paper-vgg16-wd0"} <= set(PRESETS)
    paper = config_from_args(_parse(["--preset", "paper-vgg16-bn-wd1e-3-m0.99"]))
    assert (paper.model, paper.dataset, paper.batch_size, paper.epochs, paper.lr) == ("vgg16_bn", "tiny-imagenet", 256, 100, 0.1)
    assert (paper.weight_decay, paper.momentum, paper.input_size) == (1e-3, 0.99, 64)
    cfg = config_from_args(_parse(["--preset", "digits-small", "--steps", "7", "--model-kw", "width=0.25",
                                   "--checkpoint-steps", "2,5", "--no-track", "--out", str(tmp_path / "c")]))
    assert cfg.steps == 7 and cfg.model_kwargs == {"width": 0.25} and cfg.momentum == 0.9 and not cfg.track
    rc = run_train(_parse(["mlp", "--model-kw", "widths=[8]", "--dataset", "synthetic", "--input-size", "4",
                           "--steps", "3", "--no-progress", "--out", str(tmp_path / "m")]))
    assert rc == 0 and "steps 0→3" in capsys.readouterr().out
    assert run_train(_parse(["vgg61", "--out", str(tmp_path / "bad")])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean" in err
    assert run_train(_parse(["convnet", "--dataset", "tiny-imagenet", "--data-path", str(tmp_path), "--out",
                             str(tmp_path / "t")])) == 2
    assert "wnids.txt" in capsys.readouterr().err


@pytest.mark.heavy
def test_digits_small_preset_learns(tmp_path) -> None:
    steps = int(os.environ.get("NMECH_HEAVY_STEPS", "60"))
    cfg = config_from_args(_parse(["--preset", "digits-small", "--steps", str(steps), "--no-progress",
                                   "--out", str(tmp_path / "d")]))
    res = train(cfg)
    assert res.test_accuracy > (0.9 if steps >= 300 else 0.3)


def test_float64_run_and_step_schedule(tmp_path) -> None:
    run = tmp_path / "f64"
    train(_cfg(run, dtype="float64", steps=6, checkpoint_every=None, schedule="step", lr_milestones=(3,),
               lr_gamma=0.1, momentum=0.0))
    meta = json.loads((run / "run.json").read_text())
    assert meta["dtype"] == "float64"
    from symmetry_engine.numeric.runlog import read_run

    assert np.allclose(read_run(run).lrs, [0.05] * 3 + [0.005] * 3)
    ck = torch.load(run / "checkpoints" / f"step_{6:08d}.pt", weights_only=False)
    assert all(v.dtype == torch.float64 for v in ck["model"].values() if v.is_floating_point())


def test_checkpoints_load_safely_and_agree_with_the_log(tmp_path) -> None:
    """Regression: checkpoints held numpy RNG state that `weights_only=True` refused, so the evaluator's
    checkpoint cross-check failed on every run `nmech train` wrote."""
    import torch

    from model_zoo.training import TrainConfig, list_checkpoints, train
    from symmetry_engine.numeric.evaluate import evaluate_run

    cfg = TrainConfig(model="vgg16_bn", model_kwargs={"width": 0.0625}, dataset="digits", input_size=32, batch_size=16,
                      steps=6, lr=0.05, momentum=0.9, weight_decay=5e-4, checkpoint_every=3, out=str(tmp_path / "run"),
                      progress=False, dtype="float64")
    train(cfg)
    for step in list_checkpoints(tmp_path / "run"):
        torch.load(tmp_path / "run" / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)
    ev = evaluate_run(tmp_path / "run")
    assert len(ev.checkpoints) >= 2
    assert max(max(c.errors.values()) for c in ev.checkpoints) <= 1e-12
    assert max(g.err_exact for g in ev.groups) <= 1e-9


def test_ctrl_c_then_same_command_resumes_identically(tmp_path) -> None:
    """`nmech train` interrupted with Ctrl-C (SIGINT) and re-run with the same arguments ends with the same
    weights and the same log, byte for byte, as an uninterrupted run (deterministic mode)."""
    import time

    def cmd(out):
        return [sys.executable, "-m", "analyses.cli", "train", "vgg16_bn", "--width", "0.0625", "--steps", "60",
                "--batch-size", "16", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "5e-4",
                "--checkpoint-every", "8", "--deterministic", "--no-progress", "--out", str(out)]

    ref, run = tmp_path / "ref", tmp_path / "run"
    assert subprocess.run(cmd(ref), cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    proc = subprocess.Popen(cmd(run), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step_00000008.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err     # the signal landed mid-run (60 steps; checkpoint at 8)
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert list_checkpoints(run)[-1] < 60
    again = subprocess.run(cmd(run), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (run / "stats.bin").read_bytes() == (ref / "stats.bin").read_bytes()
    last = max(list_checkpoints(ref))
    a = torch.load(ref / "checkpoints" / f"step_{last:08d}.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoints" / f"step_{last:08d}.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mismatched_or_unreadable_checkpoints_are_refused_and_nothing_is_overwritten(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    train(_cfg(run, steps=16))
    log_before = (run / "stats.bin").read_bytes()
    # a different configuration in the same --out: one-line refusal, the run untouched
    with pytest.raises(TrainingError) as err:
        train(_cfg(run, steps=24, lr=0.1))
    assert "different configuration" in str(err.value) and "lr 0.05 → 0.1" in str(err.value)
    assert "\n" not in str(err.value) and (run / "stats.bin").read_bytes() == log_before
    # a damaged newest checkpoint: warn and resume from the one before
    (run / "checkpoints" / "step_00000016.pt").write_bytes(b"not a checkpoint")
    res = train(_cfg(run, steps=24))
    assert res.resumed_from == 8 and "unreadable checkpoint" in capsys.readouterr().err
    # every checkpoint damaged: refuse instead of restarting over the log
    for p in (run / "checkpoints").glob("*.pt"):
        p.write_bytes(b"junk")
    log_now = (run / "stats.bin").read_bytes()
    with pytest.raises(TrainingError, match="no checkpoint can be read"):
        train(_cfg(run, steps=32))
    assert (run / "stats.bin").read_bytes() == log_now


def test_deterministic_resume_restores_the_thread_count(tmp_path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(_cfg(ref))                                   # 1 thread (suite fixture)
    train(_cfg(run, steps=8))                           # stops at the step-8 checkpoint
    torch.set_num_threads(2)                            # a different environment default
    train(_cfg(run))
    assert torch.get_num_threads() == 1
    assert (run / "stats.bin").read_bytes() == (ref / "stats.bin").read_bytes()


def test_cosine_run_cannot_be_extended_silently(tmp_path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, steps=8, schedule="cosine"))
    with pytest.raises(TrainingError, match="steps 8 → 16"):
        train(_cfg(run, steps=16, schedule="cosine"))
