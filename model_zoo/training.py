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
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .datasets import DataSplit, load_dataset
from .specs import build_model

CKPT_DIR = "checkpoints"
EVAL_FILE = "eval.jsonl"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, inconsistent resume); the message is one line."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``steps`` wins over ``epochs``; one of them must be set.

    Checkpoint policy: ``checkpoint_every`` N steps, an explicit ``checkpoint_steps`` list, and/or
    ``checkpoint_log`` log-spaced steps; the final step is always checkpointed.
    """

    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    loss: str = "cross_entropy"
    dataset: str = "digits"
    data_path: str | None = None
    input_size: int | None = None
    batch_size: int = 64
    steps: int | None = None
    epochs: float | None = None
    lr: float = 0.1
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | step | cosine (each with optional linear warmup)
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    seed: int = 0
    deterministic: bool = False
    dtype: str = "float32"
    device: str = "auto"
    checkpoint_every: int | None = None
    checkpoint_steps: tuple[int, ...] = ()
    checkpoint_log: int | None = None
    out: str = "runs/train"
    track: bool = True
    eval_each_epoch: bool = True
    progress: bool = True
    num_workers: int = 0
    flush_every: int = 50

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("input_shape", "lr_milestones", "checkpoint_steps"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


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


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate used by optimizer step ``step`` (0-based) — a pure function, so resume needs no state."""
    if cfg.schedule == "constant":
        lr = cfg.lr
    elif cfg.schedule == "step":
        lr = cfg.lr * cfg.lr_gamma ** sum(1 for m in cfg.lr_milestones if step >= m)
    elif cfg.schedule == "cosine":
        span = max(1, total - cfg.warmup_steps)
        lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, max(0, step - cfg.warmup_steps) / span)))
    else:
        raise TrainingError(f"unknown lr schedule {cfg.schedule!r}; choose constant, step or cosine")
    if cfg.warmup_steps and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


def checkpoint_schedule(cfg: TrainConfig, total: int) -> list[int]:
    steps = {total}
    if cfg.checkpoint_every:
        steps.update(range(cfg.checkpoint_every, total + 1, cfg.checkpoint_every))
    steps.update(int(s) for s in cfg.checkpoint_steps if 0 <= int(s) <= total)
    if cfg.checkpoint_log:
        steps.update(int(round(v)) for v in np.logspace(0, math.log10(max(total, 1)), int(cfg.checkpoint_log)))
    return sorted(s for s in steps if s >= 0)


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


def checkpoint_path(out: str | os.PathLike, step: int) -> Path:
    return Path(out) / CKPT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(out: str | os.PathLike) -> list[int]:
    d = Path(out) / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(int(p.stem[5:]) for p in d.glob("step_*.pt") if p.stem[5:].isdigit())


def _save(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_latest(out: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint; unreadable newer ones are reported and skipped, and if there are
    checkpoints but none loads the run is refused (restarting would overwrite its log)."""
    steps = list_checkpoints(out)
    bad = []
    for step in reversed(steps):
        try:
            ck = torch.load(checkpoint_path(out, step), map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file: say so, fall back to an older one
            bad.append(f"step {step} ({type(exc).__name__})")
            continue
        if bad:
            print(f"nmech train: warning: unreadable checkpoint(s) {', '.join(bad)}; resuming from step {step}",
                  file=sys.stderr)
        return ck
    if steps:
        raise TrainingError(f"{out}: no checkpoint can be read ({', '.join(bad)}); refusing to overwrite the run — "
                            "use a new --out")
    return None


# the fields that fix a run's trajectory; a resumed run must agree on them (steps/epochs may grow)
_TRAJECTORY_FIELDS = ("model", "model_kwargs", "input_shape", "loss", "dataset", "input_size", "batch_size", "lr",
                      "momentum", "dampening", "nesterov", "weight_decay", "schedule", "lr_milestones", "lr_gamma",
                      "warmup_steps", "seed", "dtype")


def _check_same_run(cfg: "TrainConfig", ckpt: dict[str, Any], out: Path) -> None:
    saved = ((ckpt.get("meta") or {}).get("train")) or {}
    now = cfg.to_json()
    fields = _TRAJECTORY_FIELDS + (("steps", "epochs") if cfg.schedule == "cosine" else ())  # cosine spans the run
    diff = [f"{k} {saved.get(k)!r} → {now.get(k)!r}" for k in fields
            if k in saved and _norm(saved.get(k)) != _norm(now.get(k))]
    if diff:
        raise TrainingError(f"{out} holds a run with a different configuration ({'; '.join(diff)}); "
                            "use a new --out to start another run")


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _truncate_eval(out: Path, step: int) -> None:
    f = out / EVAL_FILE
    if f.exists():
        keep = [l for l in f.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
        f.write_text("".join(l + "\n" for l in keep))


def _symmetries(model: torch.nn.Module, example: torch.Tensor, loss: str) -> list:
    from symmetry_engine.graph.analysis import analyze

    return list(analyze(model, example, loss=loss).symmetries)


def train(cfg: TrainConfig, symmetries: Sequence | None = None) -> RunResult:
    """Run (or resume) training as configured; returns a summary. See the module docstring."""
    t0 = time.time()
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    device, dtype = _device(cfg.device), {"float32": torch.float32, "float64": torch.float64}.get(cfg.dtype)
    if dtype is None:
        raise TrainingError(f"dtype must be float32 or float64, got {cfg.dtype!r}")
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
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _load_latest(out)
    if ckpt:
        _check_same_run(cfg, ckpt, out)
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
    tracker = None
    if cfg.track:
        from symmetry_engine.numeric.tracker import Tracker

        if symmetries is None:
            x0 = torch.stack([data.train[i][0] for i in range(min(4, len(data.train)))]).to(device, dtype)
            symmetries = _symmetries(model, x0, cfg.loss)
        meta = {"model": model_meta, "train": cfg.to_json()}
        tracker = Tracker(model, opt, out, symmetries, meta=meta, flush_every=cfg.flush_every,
                          overwrite=ckpt is None)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])
        if tracker is not None:
            if ckpt.get("tracker") is None:
                raise TrainingError(f"{out}: checkpoint step {start} has no tracker state; use a new --out or --no-track")
            tracker.load_state_dict(ckpt["tracker"])
        _truncate_eval(out, start)
    elif (out / EVAL_FILE).exists():
        (out / EVAL_FILE).unlink()
    ck_steps = checkpoint_schedule(cfg, total)

    def save(step: int) -> None:
        _save(checkpoint_path(out, step), {
            "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": _rng_state(),
            "tracker": tracker.state_dict() if tracker is not None else None,
            "data": {"epoch": step // batches.per_epoch, "index": step % batches.per_epoch, "seed": cfg.seed,
                     "batch_size": batches.bs},
            "meta": {"model": model_meta, "train": cfg.to_json(), "threads": torch.get_num_threads()}})

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {cfg.model}", dynamic_ncols=True, leave=False)
    last_loss, test = float("nan"), (None, None)
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
                with open(out / EVAL_FILE, "a") as fh:
                    fh.write(json.dumps({"step": n, "epoch": n / batches.per_epoch, "train_loss": last_loss,
                                         "test_loss": test[0], "test_accuracy": test[1]}) + "\n")
            if n in ck_steps:
                save(n)
    except BaseException:
        if tracker is not None:
            tracker.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    if tracker is not None:
        tracker.close()
    return RunResult(out, total, start, last_loss, test[0], test[1], list_checkpoints(out), time.time() - t0)


def _is_closed(out: Path) -> bool:
    """Whether the run log in ``out`` holds its final (close) record."""
    try:
        return bool(json.loads((out / "run.json").read_text()).get("closed"))
    except (OSError, ValueError):
        return False
