"""Axis flow: which entries of a tensor carry which feature, through any data-movement op.

Instead of assuming "channel = axis 1", the passes label every entry of a tensor with an integer (a
*grid*): in the scaling pass the id of the channel *slot* whose scale factor the entry carries, in the
translation pass the id of the shift pattern the entry carries. A data-movement op (view, reshape,
permute, transpose, flatten/unflatten, split/chunk/unbind, cat/stack, select/slice/narrow, expand,
squeeze/unsqueeze, roll, flip, repeat, pad, pixel/channel shuffle, unfold) moves entries without
computing anything, so running the *same aten op* on the grid gives the output's labels exactly: an axis
an op leaves alone keeps its labels, an axis it mixes (merges, splits, interleaves) gets the mixed labels.
Nothing about "which axis is the channel" is assumed anywhere.

Grids are stored *compressed*: an axis along which the labels are constant has size 1 (it broadcasts), so
the batch and spatial axes of a convolutional feature map cost nothing. They are expanded to the real
shape only to run a movement op.

Reductions (mean, sum, max, pooling) and contractions (a matmul with a fixed operand) merge the labels
along the axes they reduce: :func:`reduce_pairs` lists the label pairs that must agree.
"""

from __future__ import annotations

from math import prod
from typing import Any, Sequence

import numpy as np
import torch

#: ops that only move entries (the same op run on a grid gives the output's labels)
MOVEMENT = frozenset(
    "aten.view aten.reshape aten._unsafe_view aten.flatten aten.unflatten aten.permute aten.transpose aten.t "
    "aten.swapaxes aten.movedim aten.expand aten.expand_as aten.squeeze aten.unsqueeze aten.select aten.slice "
    "aten.narrow aten.split aten.split_with_sizes aten.chunk aten.unbind aten.cat aten.concat aten.concatenate "
    "aten.stack aten.roll aten.flip aten.repeat aten.pad aten.constant_pad_nd aten.pixel_shuffle "
    "aten.pixel_unshuffle aten.channel_shuffle aten.native_channel_shuffle aten.unfold aten.repeat_interleave "
    "aten.contiguous aten.clone aten.alias aten.detach aten.lift_fresh_copy aten.view_as aten.reshape_as "
    "aten.tile aten.hstack aten.vstack aten.index aten.index_select aten.gather aten.take_along_dim".split())
#: movement ops whose index arguments must be known values (integer buffers and constants of the model)
INDEXED = frozenset("aten.index aten.index_select aten.gather aten.take_along_dim".split())
#: movement ops that are the identity on values (no need to run them)
IDENTITY = frozenset("aten.contiguous aten.clone aten.alias aten.detach aten.lift_fresh_copy aten._to_copy "
                     "aten.to aten.type_as aten.identity".split())
#: ops taking a list of tensors as their first argument
LIST_OPS = frozenset("aten.cat aten.concat aten.concatenate aten.stack aten.hstack aten.vstack".split())
PAD_OPS = frozenset({"aten.pad", "aten.constant_pad_nd"})
MAX_GRID = 1 << 25   # entries; a bigger expanded grid is refused (the op then blocks)


class GridError(Exception):
    """A grid could not be moved through an op (unknown shapes, a non-constant pad, too large)."""


def compress(ids: torch.Tensor) -> torch.Tensor:
    """Shrink every axis along which the labels are constant to size 1."""
    for ax in range(ids.ndim):
        if ids.shape[ax] > 1:
            first = ids.narrow(ax, 0, 1)
            if bool((ids == first).all()):
                ids = first
    return ids.contiguous()


def expand(ids: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The grid at the real shape (a materialised copy)."""
    shape = tuple(int(s) for s in shape)
    if prod(shape) > MAX_GRID:
        raise GridError(f"tensor of {prod(shape)} entries is too large to follow")
    return ids.expand(shape).contiguous()


def constant(shape: Sequence[int], value: int) -> torch.Tensor:
    """A grid with one label everywhere (compressed: every axis size 1)."""
    return torch.full((1,) * len(shape), int(value), dtype=torch.int64)


def fresh(shape: Sequence[int], axes: Sequence[int], start: int) -> torch.Tensor:
    """Labels ``start, start+1, …`` varying along ``axes`` (row-major in axis order), constant elsewhere."""
    sizes = [int(shape[a]) if a in axes else 1 for a in range(len(shape))]
    return (torch.arange(prod(sizes), dtype=torch.int64) + int(start)).view(sizes)


def broadcast(ids: torch.Tensor, ndim: int) -> torch.Tensor:
    """Left-pad with size-1 axes to ``ndim`` axes (numpy broadcasting)."""
    while ids.ndim < ndim:
        ids = ids.unsqueeze(0)
    return ids


def align(ids: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A compressed grid of a tensor broadcast into ``shape`` (still compressed)."""
    ids = broadcast(ids, len(shape))
    return ids


def varying_axes(ids: torch.Tensor) -> tuple[int, ...]:
    return tuple(a for a in range(ids.ndim) if ids.shape[a] > 1)


def _tensor_names(a: Any) -> list[str]:
    if isinstance(a, tuple) and len(a) == 2 and a[0] == "node":
        return [a[1]]
    if isinstance(a, (list, tuple)):
        return [n for x in a for n in _tensor_names(x)]
    return []


def _sub(a: Any, grids: dict[str, torch.Tensor]) -> Any:
    if isinstance(a, tuple) and len(a) == 2 and a[0] == "node":
        return grids[a[1]]
    if isinstance(a, list):
        return [_sub(x, grids) for x in a]
    if isinstance(a, tuple):
        return tuple(_sub(x, grids) for x in a)
    return a


def index_values(cg: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Known integer tensors among ``names`` (buffers and constants captured with their values)."""
    return {n: cg.graph.nodes[n]["value"] for n in names if cg.graph.nodes[n].get("value") is not None}


def run_movement(target: str, args: tuple, kwargs: dict, grids: dict[str, torch.Tensor],
                 shapes: dict[str, Sequence[int] | None], fill: int,
                 values: dict[str, torch.Tensor] | None = None) -> torch.Tensor | list[torch.Tensor]:
    """Run a movement op on the grids of its tensor arguments (expanded to their shapes).

    ``grids`` maps every tensor argument's node name to its compressed grid; ``fill`` labels the entries a
    pad creates. Returns the compressed output grid, or a list of them for split-like ops.
    """
    full: dict[str, torch.Tensor] = dict(values or {})
    if target in INDEXED:
        needed = [t for t in _tensor_names(args)]
        if any(n not in full and n not in grids for n in needed) or not any(n in full for n in needed):
            raise GridError("an index whose values are not known")
    for name, g in grids.items():
        shp = shapes.get(name)
        if shp is None:
            raise GridError("unknown shape")
        full[name] = expand(broadcast(g, len(shp)), shp)
    a = list(_sub(args, full))
    kw = {k: v for k, v in _sub(dict(kwargs), full).items() if k not in ("dtype", "layout", "device", "pin_memory",
                                                                          "memory_format")}
    base = target.split(".", 1)[1]
    if target in PAD_OPS:
        mode = a[2] if len(a) > 2 else kw.get("mode", "constant")
        if mode != "constant":
            base = "pad"  # reflect/replicate pads copy entries: the grid op moves labels the same way
            out = torch.nn.functional.pad(a[0].double(), list(a[1]), mode=mode).long() if a[0].ndim >= 2 else None
            if out is None:
                raise GridError("pad mode on a low-rank tensor")
            return compress(out)
        out = torch.nn.functional.pad(a[0], list(a[1]), value=fill)
        return compress(out)
    if target == "aten.repeat_interleave" and not isinstance(a[1] if len(a) > 1 else kw.get("repeats"), int):
        raise GridError("repeat_interleave with tensor repeats")
    try:
        fn = getattr(torch.ops.aten, base)
        out = fn(*a, **kw)
    except Exception as exc:  # noqa: BLE001 - any failure means the op is not a plain movement here
        raise GridError(f"{target}: {type(exc).__name__}") from None
    if isinstance(out, (list, tuple)):
        return [compress(o) for o in out]
    return compress(out)


def _encode(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int, int]:
    """One int64 key per pair (a, b): 1-D unique is far faster than unique rows."""
    amin, bmin = int(a.min()), int(b.min())
    span = int(b.max()) - bmin + 1
    return (a.astype(np.int64) - amin) * span + (b.astype(np.int64) - bmin), amin, bmin, span  # type: ignore[return-value]


def pairs(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Unique label pairs ``(a, b)`` at the same position after broadcasting (an ``[n, 2]`` array)."""
    nd = max(a.ndim, b.ndim)
    a, b = broadcast(a, nd), broadcast(b, nd)
    a, b = torch.broadcast_tensors(a, b)
    fa, fb = a.reshape(-1).numpy(), b.reshape(-1).numpy()
    if not len(fa):
        return np.zeros((0, 2), dtype=np.int64)
    key, amin, bmin, span = _encode(fa, fb)
    u = np.unique(key)
    return np.stack([u // span + amin, u % span + bmin], 1)


def reduce_pairs(ids: torch.Tensor, axes: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
    """Merge labels along ``axes``: returns the grid narrowed to size 1 on them (keepdim) and the pairs
    ``(first label, other label)`` that the reduction requires to agree."""
    rep = ids
    for ax in axes:
        rep = rep.narrow(ax, 0, 1) if rep.shape[ax] > 1 else rep
    return rep, pairs(rep, ids)


def combine(a: torch.Tensor, b: torch.Tensor, zero_a: bool = True) -> tuple[torch.Tensor, None]:
    """A grid whose labels are the distinct pairs of ``a`` and ``b`` at each position (a finer partition);
    label 0 where ``a`` is 0 when ``zero_a``."""
    nd = max(a.ndim, b.ndim)
    a, b = broadcast(a, nd), broadcast(b, nd)
    a, b = torch.broadcast_tensors(a, b)
    shape = a.shape
    fa, fb = a.reshape(-1).numpy(), b.reshape(-1).numpy()
    key, amin, bmin, span = _encode(fa, fb)
    u, inv = np.unique(key, return_inverse=True)
    labels = np.arange(1, len(u) + 1, dtype=np.int64)
    if zero_a:
        labels[u // span + amin == 0] = 0
    return compress(torch.from_numpy(labels[inv.reshape(-1)]).view(shape)), None


def group_rows(ids: torch.Tensor, group_axes: Sequence[int], shape: Sequence[int] | None = None) -> np.ndarray:
    """One row per group of entries sharing the coordinates off ``group_axes`` (the group's labels)."""
    keep = [a for a in range(ids.ndim) if a not in group_axes]
    t = ids.permute(keep + list(group_axes))
    n_keep = prod(t.shape[: len(keep)])
    return np.ascontiguousarray(t.reshape(n_keep, -1).numpy())


def _ints(v: Any, k: int, default: int) -> list[int]:
    if v is None or v == []:
        return [default] * k
    if isinstance(v, int):
        return [v] * k
    v = list(v)
    return v * k if len(v) == 1 else v


def pool_windows(target: str, args: tuple, k: int, in_sizes: Sequence[int], out_sizes: Sequence[int]) -> list[list[list[int]]]:
    """For each of the ``k`` pooled (trailing) axes, the input indices each output index reads."""
    out: list[list[list[int]]] = []
    adaptive = "adaptive" in target
    kernel = _ints(args[1] if len(args) > 1 else None, k, 1)
    stride = _ints(args[2] if len(args) > 2 else None, k, 0)
    stride = [s or kk for s, kk in zip(stride, kernel)]
    padding = _ints(args[3] if len(args) > 3 else None, k, 0)
    dilation = _ints(args[4] if "max_pool" in target and len(args) > 4 else None, k, 1)
    for a in range(k):
        L, O = int(in_sizes[a]), int(out_sizes[a])
        wins = []
        for i in range(O):
            if adaptive:
                lo, hi = (i * L) // O, -((-(i + 1) * L) // O)
                wins.append(list(range(lo, hi)))
            else:
                start = i * stride[a] - padding[a]
                wins.append([j for j in (start + t * dilation[a] for t in range(kernel[a])) if 0 <= j < L])
        out.append(wins)
    return out
