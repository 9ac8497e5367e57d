"""A fixed sample of individual parameter entries per tracked layer, recorded at every step (``samples.bin``).

Why: the paper's Figure 1 sets individual parameters — which wander with the minibatch noise from one
step to the next — beside the per-channel quantities that a symmetry ties to a conservation law. The
statistics in ``stats.bin`` are sums over channels and cannot show the first half; checkpoints show it
only at a few steps. So the tracker keeps ``count`` (default 16) entries of one parameter per tracked
layer (its weight when the layer's weight is tracked), chosen once by a seeded draw from the parameter's
name, so the choice never depends on the run and a resumed tracker reads it back from ``run.json``.

Cost: O(layers) memory and one ``torch.take`` per layer per step into a device row (no Python per entry,
no host synchronisation on CUDA: the row travels with the stats record, numeric/tracker.py). The row
``[n, θ_n entries...]`` is written to ``samples.bin`` with the same per-block CRC-32 as ``stats.bin``
(``samples.crc``, numeric/runfile.py), just before the stats record of the same step, so a killed
process never leaves a stats record without its sample row (docs/run_format.md, "samples.bin").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .runfile import RunLogError, count_records, read_records

SAMPLES_FILE = "samples.bin"
DEFAULT_COUNT = 16


def layer_of(param: str) -> str:
    """The layer a parameter belongs to: its module path (``features.3.weight`` → ``features.3``)."""
    return param.rsplit(".", 1)[0] if "." in param else param


def choose_entries(params: Mapping[str, Sequence[int]], count: int = DEFAULT_COUNT) -> list[dict[str, Any]]:
    """The sample: per layer one parameter (``name → shape``, tracked parameters in model order) — the
    layer's ``weight`` when it has one, else its first — and up to ``count`` flat (C-order) entry indices
    drawn without replacement by a generator seeded with the CRC-32 of the parameter's name, sorted.

    Returns ``[{"name", "layer", "shape", "indices"}]`` in model order (the run.json ``samples.params``)."""
    if count <= 0:
        return []
    by_layer: dict[str, str] = {}
    for name in params:
        layer = layer_of(name)
        if layer not in by_layer or (name.endswith(".weight") and not by_layer[layer].endswith(".weight")):
            by_layer[layer] = name
    out = []
    for name in params:
        if by_layer.get(layer_of(name)) != name:
            continue
        shape = [int(s) for s in params[name]]
        size = int(np.prod(shape)) if shape else 1
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        idx = np.sort(rng.choice(size, size=min(int(count), size), replace=False))
        out.append({"name": name, "layer": layer_of(name), "shape": shape, "indices": [int(i) for i in idx]})
    return out


def samples_meta(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The run.json ``samples`` entry (None when nothing is sampled)."""
    if not entries:
        return None
    return {"file": SAMPLES_FILE, "record_size": 1 + sum(len(e["indices"]) for e in entries),
            "params": [dict(e) for e in entries]}


def check_entries(meta: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], where: Path) -> None:
    """A logged sample must name parameters of this model with the same shapes (resuming refuses otherwise)."""
    for e in meta.get("params") or []:
        shape = shapes.get(e.get("name"))
        if shape is None or [int(s) for s in shape] != [int(s) for s in e.get("shape", [])]:
            raise RunLogError(f"{where}: the logged parameter sample names {e.get('name')!r} with shape "
                              f"{e.get('shape')}, which this model does not have; cannot resume into this log")


def resume_keep(path: Path, record_size: int, step: int) -> int:
    """Sample rows to keep when resuming at ``step``: the verified rows of steps before it (a final row
    at step T is cut as its stats record is; rows are matched to records by their step, not position)."""
    if not path.exists() or not count_records(path, record_size):
        return 0
    data, _ = read_records(path, record_size)
    return int(np.searchsorted(data[:, 0], step, side="left"))


class Sampler:
    """Gathers the sample of every step into one float64 device row ``[1 + K]`` (entry 0: the step,
    filled on the host)."""

    def __init__(self, entries: Sequence[Mapping[str, Any]], params: Mapping[str, Any], device: Any) -> None:
        import torch

        self.pairs = [(params[e["name"]], torch.as_tensor(e["indices"], dtype=torch.int64, device=device))
                      for e in entries]
        self.row = torch.full((1 + sum(len(e["indices"]) for e in entries),), float("nan"), dtype=torch.float64,
                              device=device)

    def take(self) -> Any:
        """θ's sampled entries now (one ``torch.take`` per layer, one copy into the row)."""
        import torch

        with torch.no_grad():
            self.row[1:] = torch.cat([torch.take(p.detach(), idx) for p, idx in self.pairs])
        return self.row


@dataclass
class RunSamples:
    """The sample of a run: ``values[name]`` is ``[rows, k]`` (entry ``indices[name][j]`` at ``steps``)."""

    steps: np.ndarray
    values: dict[str, np.ndarray]
    indices: dict[str, list[tuple[int, ...]]]
    layers: dict[str, str]                      # layer → parameter sampled
    warnings: list[str] = field(default_factory=list)


def read_samples(run_dir: str | Path, meta: Mapping[str, Any] | None = None) -> RunSamples | None:
    """``samples.bin`` of a run, verified block by block (None when the run has no sample)."""
    from .runfile import read_json

    run_dir = Path(run_dir)
    if meta is None:
        meta = read_json(run_dir / "run.json")
    sm = (meta or {}).get("samples")
    if not sm:
        return None
    path = run_dir / str(sm.get("file", SAMPLES_FILE))
    if not path.exists():
        return None
    size = int(sm["record_size"])
    data, warns = read_records(path, size)
    values, indices, layers, col = {}, {}, {}, 1
    for e in sm["params"]:
        k = len(e["indices"])
        values[e["name"]] = np.asarray(data[:, col:col + k])
        shape = tuple(int(s) for s in e["shape"])
        indices[e["name"]] = [tuple(int(i) for i in np.unravel_index(int(f), shape)) for f in e["indices"]]
        layers[e["layer"]] = e["name"]
        col += k
    return RunSamples(np.asarray(data[:, 0]).astype(np.int64), values, indices, layers, list(warns))


__all__ = ["SAMPLES_FILE", "DEFAULT_COUNT", "choose_entries", "samples_meta", "check_entries", "resume_keep",
           "Sampler", "RunSamples", "read_samples", "layer_of"]
