"""Shared inputs of the report tests: a small tracked run, and evaluation JSON in the issue-7 contract.

PHASE-1 STAND-IN: ``contract_json`` decorates today's ``Evaluation.to_json()`` with the keys of format
``nmech-evaluation/2`` (verdicts, law errors, member classes, thresholds) using *synthetic* values, and
``attach_law`` gives the series a synthetic ``law`` array, so the report's verdict-dependent parts are
exercised before the evaluator produces them. Replace both with the real evaluation once issue 7 lands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .test_evaluate import run_with_checkpoints
from .test_tracker import MOMENTUM

VERDICTS = ("holds", "approximate", "broken", "degenerate")


def toy_run(run_dir: Path, steps: int = 30, every: int = 10, eval_log: bool = True) -> Path:
    """The tracker tests' toy (conv→BN→conv→linear, float64, momentum and weight decay) with checkpoints
    and an eval.jsonl as ``nmech train`` writes it."""
    run_with_checkpoints(run_dir, MOMENTUM, steps, every=every)
    if eval_log:
        rows = [{"step": s, "epoch": s / 10, "train_loss": 1.0 / (1 + s), "test_loss": 1.5 / (1 + 0.1 * s),
                 "test_accuracy": min(1.0, 0.2 + 0.02 * s)} for s in range(10, steps + 1, 10)]
        (run_dir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def attach_law(ev: Any) -> None:
    """Synthetic ``law`` series (exact + 1e-6 of the group's size): only its plotting is under test."""
    for ser in ev.series.values():
        ser.law = np.asarray(ser.exact) + 1e-6 * np.asarray(ser.norm)[None, :]


def _stats(values: Iterable[float]) -> dict[str, float] | None:
    v = [x for x in values if x is not None]
    return {"max": float(np.max(v)), "median": float(np.median(v))} if v else None


def contract_json(ev: Any, degenerate: Iterable[str] = (), broken: Iterable[str] = (),
                  approximate: Iterable[str] = ()) -> dict[str, Any]:
    """``ev.to_json()`` in the shape of ``nmech-evaluation/2`` with synthetic verdicts (see module docstring)."""
    degenerate, broken, approximate = set(degenerate), set(broken), set(approximate)
    data = ev.to_json()
    data.update({"format": "nmech-evaluation/2", "source": "run", "train": ev.meta.get("train"),
                 "thresholds": {"unit_roundoff": 2.0**-53, "exact_identity": 1e-9, "law_holds": 1e-8,
                                "breaking_roundoff": 1e-10, "breaking_eps_factor": 10.0,
                                "degenerate_gradient_share": 1e-6},
                 "degenerate_note": "Degenerate groups have gradient and quantity at round-off (synthetic note)."})
    law_by_key = {}
    for ser in ev.series.values():
        law = getattr(ser, "law", None)
        if law is not None:
            for j, s in enumerate(ser.symmetries):
                law_by_key[s.key] = float(np.max(np.abs(ser.measured[:, j] - law[:, j])) / max(float(ser.norm[j]), 1e-300))
    for g in data["groups"]:
        key = g["key"]
        g["verdict"] = ("degenerate" if key in degenerate else "broken" if key in broken
                        else "approximate" if key in approximate else "holds")
        g["cause"] = {"broken": "breaking far above round-off (synthetic)",
                      "approximate": "normalizer eps (synthetic)"}.get(g["verdict"])
        g["err_law"] = law_by_key.get(key, g["err_exact"])
        g["err_approx"] = None
        g["optimizer_breaking"] = 0.0
        g["gradient_share"] = 0.5
        g["classes"] = ["c0"]
        g["final_law"] = g["final_exact"]
    data["verdicts"] = {v: sum(g["verdict"] == v for g in data["groups"]) for v in VERDICTS}
    for scope, rows in (("summary", [(k, None) for k in data["summary"]]),
                        ("layers", [(r["kind"], r["layer"]) for r in data["layers"]])):
        for i, (kind, layer) in enumerate(rows):
            gs = [g for g in data["groups"] if g["kind"] == kind and (layer is None or g["layer"] == layer)]
            use = [g for g in gs if g["verdict"] != "degenerate"]
            target = data["summary"][kind] if scope == "summary" else data["layers"][i]
            target["verdicts"] = {v: sum(g["verdict"] == v for g in gs) for v in VERDICTS}
            for col, name in (("exact", "err_exact"), ("law", "err_law"), ("continuous", "err_continuous"),
                              ("breaking", "breaking")):
                target[col] = _stats(g[name] for g in use)
    opt = data["optimizer"]
    rng = lambda v: {"first": v, "last": v, "min": v, "max": v}  # noqa: E731
    data["optimizer"]["classes"] = [
        {"id": "c0", "label": "weights", "param_group": 0, "frozen": False, "params": ["conv1.weight", "fc.weight"],
         "lr": rng(opt["lr"]), "momentum": rng(opt["momentum"]), "dampening": rng(opt["dampening"]),
         "weight_decay": rng(opt["weight_decay"]), "nesterov": False, "decoupled_weight_decay": False},
        {"id": "c1", "label": "norms and biases", "param_group": 1, "frozen": False, "params": ["bn.weight", "bn.bias"],
         "lr": {"first": 0.05, "last": 0.01, "min": 0.01, "max": 0.05}, "momentum": rng(opt["momentum"]),
         "dampening": rng(opt["dampening"]), "weight_decay": rng(0.0), "nesterov": False,
         "decoupled_weight_decay": False}]
    data["warnings"] = list(data["warnings"]) + ["synthetic warning: tracker attached after step 0"]
    return data


__all__ = ["toy_run", "contract_json", "attach_law", "VERDICTS"]
