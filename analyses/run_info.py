"""What a report says about a run besides the laws: its configuration, evaluation log and sweeps' labels.

Reads ``run.json`` (model, ``train`` config written by ``nmech train``) and ``eval.jsonl`` (one line per
evaluation pass of the zoo's training loop); both are optional, a run from a user's own loop may have
neither. Also names the hyperparameters that differ between runs, for sweep legends.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

EVAL_FILE = "eval.jsonl"

# how a hyperparameter is written in a legend (the paper's symbols)
SYMBOLS = {"weight_decay": "λ", "momentum": "β", "lr": "η", "dampening": "d", "batch_size": "B",
           "seed": "seed", "nesterov": "nesterov", "decoupled_weight_decay": "decoupled",
           "schedule": "schedule", "warmup_steps": "warmup", "dtype": "dtype", "model": "model",
           "model_kwargs": "model", "dataset": "data", "steps": "steps", "loss": "loss"}
# fields that differ between runs without making them different experiments
_NOT_HYPERPARAMETERS = {"out", "run_dir", "progress", "num_workers", "flush_every", "checkpoint_every",
                        "checkpoint_steps", "checkpoint_log", "device", "data_path", "eval_each_epoch", "track",
                        "deterministic", "epochs", "tensorboard"}


def read_eval_log(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The evaluation passes in ``eval.jsonl`` (sorted by step) and a note per unreadable line."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return [], []
    rows, bad = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            float(row["step"])
        except (ValueError, KeyError, TypeError):
            bad.append(f"{EVAL_FILE} line {n} is not a JSON object with a step; skipped")
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: float(r["step"])), bad


def read_run_meta(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` without its (long) symmetry list; ``{}`` when absent or unreadable."""
    try:
        meta = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    meta.pop("symmetries", None)
    return meta if isinstance(meta, dict) else {}


def hyperparameters(data: Mapping[str, Any]) -> dict[str, Any]:
    """Flat hyperparameters of an evaluated run: the training config (when ``nmech train`` wrote one),
    then the optimizer's description (which wins: it is what the laws were evaluated for)."""
    out: dict[str, Any] = {}
    for k, v in (data.get("train") or {}).items():
        if k not in _NOT_HYPERPARAMETERS:
            out[k] = v
    opt = data.get("optimizer") or {}
    for k in ("rule", "lr", "momentum", "dampening", "nesterov", "weight_decay", "decoupled_weight_decay"):
        if k in opt:
            out[k] = opt[k]
    model = data.get("model") or {}
    if "model" not in out and model.get("spec"):
        out["model"] = model["spec"]
    if model.get("kwargs") and "model_kwargs" not in out:
        out["model_kwargs"] = model["kwargs"]
    if data.get("dtype") and "dtype" not in out:
        out["dtype"] = data["dtype"]
    return out


def differing(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the hyperparameters whose values are not the same in every run (in a stable order)."""
    flat = [hyperparameters(r) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]


def format_value(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if math.isfinite(v) and (abs(v) < 1e-2 or abs(v) >= 1e4):
            return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
        return f"{v:g}"
    if isinstance(v, dict):
        return ",".join(f"{k}={format_value(x)}" for k, x in v.items())
    return str(v)


def run_label(data: Mapping[str, Any], keys: Sequence[str], fallback: str) -> str:
    """Legend label of one run: ``λ = 5e-4, β = 0.9`` from the differing keys, else ``fallback``."""
    hp = hyperparameters(data)
    parts = [f"{SYMBOLS.get(k, k)} = {format_value(hp.get(k))}" for k in keys if k in hp]
    return ", ".join(parts) if parts else fallback


__all__ = ["read_eval_log", "read_run_meta", "hyperparameters", "differing", "run_label", "format_value", "SYMBOLS"]
