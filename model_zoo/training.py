"""The training loop that produces tracked runs: config, schedules, checkpoints, exact resume.

``train(TrainConfig(...))`` builds the model and data, attaches the symmetry tracker
(``symmetry_engine.numeric.tracker``) to a ``torch.optim.SGD`` optimizer and writes the run directory of
docs/architecture.md: ``run.json`` + ``stats.bin`` (by the tracker, with this run's ``model`` and
``train`` info added to the meta), ``checkpoints/step_<8-digit step>.pt`` and ``eval.jsonl`` (one line per
evaluation pass).

Resume is the default: re-running the same config in the same ``out`` directory continues from the
newest checkpoint. Each step's minibatch is a pure function of (seed, step) — a seeded permutation per
epoch — and a checkpoint stores model, optimizer, RNG states, the tracker state and the data position,
so in deterministic mode an interrupted-and-resumed run is bit-identical to an uninterrupted one.

The configuration lives in train_config.py (torch-free: the CLI parses without torch), the decisions
about the run directory (resume, refuse, replace; hashed checkpoints; torn-tail repair) in
train_files.py, the lock and SIGTERM handling in ``symmetry_engine.numeric.runlock``.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from symmetry_engine.numeric.runfile import RunLogError, describe_os_error
from symmetry_engine.numeric.runlock import RunLock, sigterm_raises

from .datasets import DataSplit, load_dataset
from .specs import build_model
from .train_config import TrainConfig, TrainingError, check_config, checkpoint_schedule, lr_at
from .train_files import (append_eval, checkpoint_path, clear_run_files, config_differences, list_checkpoints,
                          load_latest, plan_start, repair_logs, save_checkpoint, scan_run_dir, stderr_warning,
                          verified_log_end)

__all__ = ["RunResult", "TrainConfig", "TrainingError", "checkpoint_path", "checkpoint_schedule",
           "evaluate_model", "list_checkpoints", "lr_at", "train"]


@dataclass
class RunResult:
    out_dir: Path
    steps: int
    resumed_from: int
    final_loss: float
    test_loss: float | None
    test_accuracy: float | None
    checkpoints: list[int]
    seconds: float


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device cuda requested but torch.cuda.is_available() is False")
    return torch.device(name)


class StepBatches:
    """Minibatch of step n = batch (n mod E) of epoch (n div E) under a permutation seeded by (seed, epoch)."""

    def __init__(self, ds: Dataset, batch_size: int, seed: int, num_workers: int = 0) -> None:
        self.ds, self.seed, self.workers = ds, seed, num_workers
        self.n = len(ds)  # type: ignore[arg-type]
        if self.n == 0:
            raise TrainingError("the training split is empty")
        self.bs = min(batch_size, self.n)
        self.per_epoch = self.n // self.bs

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def iterate(self, start: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        step = start
        while True:
            epoch, k = divmod(step, self.per_epoch)
            perm = self.permutation(epoch)
            idx = [perm[i * self.bs:(i + 1) * self.bs] for i in range(k, self.per_epoch)]
            if isinstance(self.ds, TensorDataset):
                for b in idx:
                    yield step, self.ds.tensors[0][b], self.ds.tensors[1][b]
                    step += 1
            else:
                loader = DataLoader(self.ds, batch_sampler=[b.tolist() for b in idx], num_workers=self.workers)
                for x, y in loader:
                    yield step, x, torch.as_tensor(y)
                    step += 1


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "cross_entropy":
        return F.cross_entropy(out, y)
    if kind == "mse":
        return F.mse_loss(out, F.one_hot(y, out.shape[1]).to(out.dtype))
    raise TrainingError(f"unknown loss {kind!r}; choose cross_entropy or mse")


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, ds: Dataset, loss: str, device: torch.device, dtype: torch.dtype,
                   batch_size: int = 512) -> tuple[float, float]:
    """Mean loss and accuracy over ``ds`` in eval mode (BN uses running statistics)."""
    was = model.training
    model.eval()
    tot, correct, n = 0.0, 0, 0
    for x, y in DataLoader(ds, batch_size=batch_size, shuffle=False):
        x, y = x.to(device, dtype), torch.as_tensor(y).to(device)
        out = model(x)
        tot += float(_loss(loss, out, y)) * len(y)
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    model.train(was)
    return tot / max(n, 1), correct / max(n, 1)


def _rng_state() -> dict[str, Any]:
    """RNG states in types `torch.load(weights_only=True)` accepts (tensors, ints, tuples), so checkpoints
    load without unpickling arbitrary objects."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st: dict[str, Any] = {"torch": torch.get_rng_state(),
                          "numpy": (str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                                    int(has_gauss), float(gauss)),
                          "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    kind, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _symmetries(model: torch.nn.Module, example: torch.Tensor, loss: str) -> list:
    from symmetry_engine.graph.analysis import analyze

    return list(analyze(model, example, loss=loss).symmetries)


def train(cfg: TrainConfig, symmetries: Sequence | None = None, *, overwrite: bool = False,
          warn: Callable[[str], None] = stderr_warning) -> RunResult:
    """Run (or resume) training as configured; returns a summary. See the module docstring.

    Before any set-up: the configuration's values are checked, the run directory is created (or refused:
    a file in the way, a read-only file system) and locked against a second writer, and what it holds is
    validated. A directory holding a run this configuration cannot resume is refused unless ``overwrite``,
    which clears the run's files (logs, checkpoints, report) and starts again. SIGTERM stops training like
    Ctrl-C: the log is flushed, the lock released, and :class:`Terminated` raised.
    """
    check_config(cfg)
    if cfg.tensorboard is not None and cfg.track:
        from symmetry_engine.numeric.tensorboard import require_tensorboard

        require_tensorboard()   # one line, before the run directory is touched
    out = Path(cfg.out)
    try:
        lock = RunLock(out, "nmech train", on_stale=warn)
    except RunLogError as exc:
        raise TrainingError(str(exc)) from None
    try:
        with sigterm_raises():
            return _train_locked(cfg, out, symmetries, overwrite, warn)
    except OSError as exc:   # while opening or repairing the run's files (the loop words its own)
        raise TrainingError(f"{describe_os_error(exc)}; nothing written before is lost — the same command "
                            "resumes once that is fixed") from None
    finally:
        lock.release()


def _train_locked(cfg: TrainConfig, out: Path, symmetries: Sequence | None, overwrite: bool,
                  warn: Callable[[str], None]) -> RunResult:
    t0 = time.time()
    state = scan_run_dir(out)
    plan = plan_start(state, cfg, overwrite)          # refusals happen here, before the slow set-up
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    device, dtype = _device(cfg.device), {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    data: DataSplit = load_dataset(cfg.dataset, cfg.data_path, cfg.input_size)
    model, info = build_model(cfg.model, num_classes=data.num_classes,
                              input_shape=cfg.input_shape or data.input_shape, **cfg.model_kwargs)
    model = model.to(device=device, dtype=dtype).train()
    batches = StepBatches(data.train, cfg.batch_size, cfg.seed, cfg.num_workers)
    total = int(cfg.steps) if cfg.steps is not None else int(round((cfg.epochs or 0) * batches.per_epoch))
    if total <= 0:
        raise TrainingError("set steps or epochs to a positive number")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                          nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    ckpt = None
    if plan == "resume":
        ckpt = load_latest(out, state, verified_log_end(out, state) if cfg.track else None, warn)
    if ckpt:
        diff = config_differences(cfg, ((ckpt.get("meta") or {}).get("train")) or {})
        if diff:
            raise TrainingError(f"{out} holds a run with a different configuration ({'; '.join(diff)}); "
                                "use a new --out to start another run (or --overwrite to replace it)")
        threads = (ckpt.get("meta") or {}).get("threads")
        if cfg.deterministic and threads and threads != torch.get_num_threads():
            # CPU reductions split work by thread: the same bits need the same thread count
            print(f"nmech train: deterministic resume uses {threads} threads, as the run so far", file=sys.stderr)
            torch.set_num_threads(int(threads))
    start = int(ckpt["step"]) if ckpt else 0
    model_meta = {**info.to_json(), "loss": cfg.loss}
    if ckpt and start >= total and (not cfg.track or _is_closed(out)):  # already complete: nothing to redo
        model.load_state_dict(ckpt["model"])
        test = evaluate_model(model, data.test, cfg.loss, device, dtype)
        return RunResult(out, total, start, float("nan"), test[0], test[1], list_checkpoints(out), time.time() - t0)
    if ckpt and cfg.track and ckpt.get("tracker") is None:
        raise TrainingError(f"{out}: checkpoint step {start} has no tracker state; use a new --out or --no-track")
    tracker = None
    if cfg.track:
        from symmetry_engine.numeric.tracker import Tracker

        if symmetries is None:
            x0 = torch.stack([data.train[i][0] for i in range(min(4, len(data.train)))]).to(device, dtype)
            symmetries = _symmetries(model, x0, cfg.loss)
    if plan == "replace":
        clear_run_files(out)
    if cfg.track:
        meta = {"model": model_meta, "train": cfg.to_json()}
        tracker = Tracker(model, opt, out, symmetries, meta=meta, flush_every=cfg.flush_every,
                          overwrite=ckpt is None, tensorboard=cfg.tensorboard)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])
        if tracker is not None:
            tracker.load_state_dict(ckpt["tracker"])   # validates stats.bin, then cuts it after step start - 1
        repair_logs(out, state, start)                 # eval.jsonl, checkpoints.jsonl: validated by scan_run_dir
    ck_steps = checkpoint_schedule(cfg, total)

    def save(step: int) -> None:
        save_checkpoint(out, step, {
            "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": _rng_state(),
            "tracker": tracker.state_dict() if tracker is not None else None,
            "data": {"epoch": step // batches.per_epoch, "index": step % batches.per_epoch, "seed": cfg.seed,
                     "batch_size": batches.bs},
            "meta": {"model": model_meta, "train": cfg.to_json(), "threads": torch.get_num_threads()}})

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {cfg.model}", dynamic_ncols=True, leave=False)
    last_loss, test, step = float("nan"), (None, None), start
    try:
        if start == 0 and 0 in ck_steps:
            save(0)
        it = batches.iterate(start)
        for step in range(start, total):
            _, x, y = next(it)
            x, y = x.to(device, dtype), y.to(device)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, total)
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = _loss(cfg.loss, logits, y)
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise TrainingError(f"loss is {last_loss} at step {step}; stopped (log and checkpoints up to "
                                    f"step {step} kept in {out})")
            loss.backward()
            if tracker is not None:
                tracker.record_loss(loss)
            opt.step()
            n = step + 1
            if bar is not None:
                acc = float((logits.argmax(1) == y).float().mean())
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{acc:.3f}")
            if cfg.eval_each_epoch and (n % batches.per_epoch == 0 or n == total):
                test = evaluate_model(model, data.test, cfg.loss, device, dtype)
                append_eval(out, {"step": n, "epoch": n / batches.per_epoch, "train_loss": last_loss,
                                  "test_loss": test[0], "test_accuracy": test[1]})
            if n in ck_steps:
                save(n)
        if tracker is not None:
            tracker.close()
    except OSError as exc:   # disk full, file system gone read-only: one line, the run stays resumable
        _abort(tracker)
        done = [s for s in list_checkpoints(out) if s <= step]
        raise TrainingError(f"{describe_os_error(exc)}; stopped at step {step} — the same command resumes from "
                            f"step {done[-1] if done else 0}") from None
    except BaseException:
        _abort(tracker)
        raise
    finally:
        if bar is not None:
            bar.close()
    return RunResult(out, total, start, last_loss, test[0], test[1], list_checkpoints(out), time.time() - t0)


def _abort(tracker: Any) -> None:
    """Flush what the tracker recorded after a failure; a second failure (the disk is still full) must not
    hide the first."""
    if tracker is not None:
        try:
            tracker.abort()
        except Exception:  # noqa: BLE001
            pass


def _is_closed(out: Path) -> bool:
    """Whether the run log in ``out`` holds its final (close) record."""
    try:
        return bool(json.loads((out / "run.json").read_text()).get("closed"))
    except (OSError, ValueError):
        return False
