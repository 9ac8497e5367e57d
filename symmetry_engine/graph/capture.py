"""Turn an ``nn.Module`` into a ``networkx.DiGraph`` of aten ops with parameter references and shapes.

``torch.export`` in train mode is the primary path (it keeps batch norm's training semantics and gives
high-level aten ops such as ``aten.conv2d`` and ``aten.batch_norm``); ``make_fx`` with pre-dispatch
tracing over ``functional_call`` is the fallback for models export rejects. Both produce the same op
vocabulary, so the op-semantics table serves both.

Node attributes:
  ``kind``   "param" | "buffer" | "input" | "const" | "op" | "output" | "loss"
  ``target`` canonical op name without overload, e.g. ``aten.conv2d`` (op nodes), ``loss.cross_entropy``
  ``args``   positional arguments: node names for tensors (``("node", name)``), plain values otherwise
  ``param``  ``state_dict`` key (param/buffer nodes)
  ``shape``  output shape tuple (or None)
Edges ``u → v`` carry ``pos``: the argument positions of ``u`` in ``v``'s args (tuples for list args).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import networkx as nx
import torch
from torch import nn

LOSS_KINDS = ("cross_entropy", "mse")


class CaptureError(ValueError):
    """The model could not be traced with the given example input (one-line message)."""


def output_leaves(out: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors a model returns, in pytree order, each with its path (``[0]``, ``.logits``, ``['aux']``)."""
    leaves, _ = torch.utils._pytree.tree_flatten_with_path(out)
    named = []
    for path, leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            named.append(("".join(str(k) for k in path) or "output", leaf))
    return named


def output_index(names: Sequence[str], output: int | str | None) -> int:
    """Which returned tensor is the logits: ``output`` as an index or a name (``logits``, ``aux_logits``);
    by default the first (the main logits of GoogLeNet / Inception-v3, whose auxiliary heads follow)."""
    if output is None:
        return 0
    if isinstance(output, int) or (isinstance(output, str) and output.lstrip("-").isdigit()):
        i = int(output)
        if not -len(names) <= i < len(names):
            raise CaptureError(f"--output {output}: the model returns {len(names)} tensors ({', '.join(names)})")
        return i % len(names)
    hits = [i for i, n in enumerate(names) if n.strip(".[]'\"") == str(output) or n == str(output)]
    if len(hits) != 1:
        raise CaptureError(f"--output {output!r} names none of the returned tensors ({', '.join(names)})")
    return hits[0]


def select_output(out: Any, output: int | str | None = None) -> torch.Tensor:
    """The logits tensor among a model's outputs (see :func:`output_index`)."""
    if isinstance(out, torch.Tensor):
        return out
    named = output_leaves(out)
    if not named:
        raise CaptureError("the model returned no tensor")
    return named[output_index([n for n, _ in named], output)][1]


@dataclass
class CapturedGraph:
    graph: nx.DiGraph
    param_shapes: dict[str, tuple[int, ...]]
    inputs: list[str]
    output: str
    loss: str
    method: str
    warnings: list[str] = field(default_factory=list)

    def op_nodes(self) -> list[str]:
        return [n for n, d in self.graph.nodes(data=True) if d["kind"] == "op"]

    def users(self, name: str) -> list[str]:
        return list(self.graph.successors(name))


def op_name(target: Any) -> str:
    """``aten.add.Tensor`` → ``aten.add``; ``aten.relu_`` → ``aten.relu``; ``operator.getitem`` → ``getitem``."""
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        ns, base = str(target).split(".")[:2]
        if base.endswith("_") and not base.endswith("__"):
            base = base[:-1]  # in-place variants compute the same values
        return f"{ns}.{base}"
    return getattr(target, "__name__", str(target))


def _shape_of(meta_val: Any) -> tuple[int, ...] | None:
    if isinstance(meta_val, torch.Tensor):
        try:
            return tuple(int(s) for s in meta_val.shape)
        except TypeError:  # symbolic sizes
            return None
    return None


def _convert_arg(a: Any, names: dict[Any, str]) -> Any:
    if isinstance(a, torch.fx.Node):
        return ("node", names[a])
    if isinstance(a, (list, tuple)):
        return type(a)(_convert_arg(x, names) for x in a)
    if isinstance(a, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return str(a)
    return a


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _paths(structure: Any, leaf: type) -> list[str]:
    leaves, _ = torch.utils._pytree.tree_flatten_with_path(structure)
    return [("".join(str(k) for k in path) or "output") for path, x in leaves if isinstance(x, leaf)]


def _export_graph(model: nn.Module, inputs: tuple):
    ep = torch.export.export(model, inputs)
    sig = ep.graph_signature
    spec = ep.call_spec.out_spec
    names = _paths(torch.utils._pytree.tree_unflatten(list(range(spec.num_leaves)), spec), int)
    return ep.graph_module.graph, dict(sig.inputs_to_parameters), dict(sig.inputs_to_buffers), "torch.export", names


def _make_fx_graph(model: nn.Module, inputs: tuple):
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.func import functional_call

    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    pnames, bnames = list(params), list(buffers)

    def fn(ps, bs, *xs):
        return functional_call(model, ({**dict(zip(pnames, ps)), **dict(zip(bnames, bs))}), xs)

    gm = make_fx(fn, pre_dispatch=True)(list(params.values()), list(buffers.values()), *inputs)
    graph_inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    to_p = {graph_inputs[i].name: pnames[i] for i in range(len(pnames))}
    to_b = {graph_inputs[len(pnames) + i].name: bnames[i] for i in range(len(bnames))}
    out = next(n for n in gm.graph.nodes if n.op == "output")
    names = _paths(out.args[0] if len(out.args) == 1 else out.args, torch.fx.Node)
    return gm.graph, to_p, to_b, "make_fx", names


def capture(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], loss: str = "cross_entropy",
            output: int | str | None = None) -> CapturedGraph:
    """Trace ``model`` in train mode (its modes are restored) and build the computation graph with a loss node.

    A model returning several tensors (auxiliary heads, a tuple, a dict) is scored on one of them:
    ``output`` (index or name, see :func:`output_index`), by default the first. Ops whose values cannot
    reach the loss (the auxiliary heads) are dropped from the graph: their parameters have no symmetry
    worth reporting, since the loss does not depend on them at all."""
    if loss not in LOSS_KINDS:
        raise CaptureError(f"unknown loss kind {loss!r}; expected one of {', '.join(LOSS_KINDS)}")
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    warnings: list[str] = []
    errors = []
    traced = None
    # torch.export traces on fake tensors: no copy of the model and no full-size forward pass are needed;
    # the model is put in train mode for the trace and its modes are restored after
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        try:
            traced = _export_graph(model, inputs)
        except Exception as exc:  # noqa: BLE001 - reported below if the fallback fails too
            errors.append(f"export_graph: {_first_line(exc)}")
    finally:
        for m, mode in modes:
            m.training = mode
    if traced is None:
        copy_model = copy.deepcopy(model).train()   # make_fx runs the model: keep the user's buffers intact
        try:
            with torch.no_grad():
                copy.deepcopy(copy_model)(*inputs)
        except Exception as exc:  # noqa: BLE001 - any failure here means the input does not fit the model
            shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
            raise CaptureError(f"the model does not accept an input of shape {shapes}: {_first_line(exc)}") from None
        try:
            traced = _make_fx_graph(copy_model, inputs)
        except Exception as exc:  # noqa: BLE001 - report every tracer's reason
            errors.append(f"make_fx_graph: {_first_line(exc)}")
            raise CaptureError("could not trace the model with the given input: " + " | ".join(errors)) from None
        warnings.append("torch.export failed; traced with make_fx instead (" + errors[0] + ")")
    fx_graph, to_param, to_buffer, method, names = traced
    if not names:
        raise CaptureError("the model returned no tensor")
    out_i = output_index(names, output)
    if len(names) > 1:
        warnings.append(f"the model returns {len(names)} tensors ({', '.join(names)}); the loss reads {names[out_i]} "
                        f"(choose with --output)")
    traced_model = model

    # tied parameters (GPT-2's embedding and output head) have several names; use the first, as
    # named_parameters() does, so every use of one tensor is one parameter node
    first: dict[int, str] = {}
    canon: dict[str, str] = {}
    for pname, p in traced_model.named_parameters(remove_duplicate=False):
        canon[pname] = first.setdefault(id(p), pname)
    buffers = dict(traced_model.named_buffers())
    g = nx.DiGraph()
    names_of: dict[Any, str] = {}
    param_shapes: dict[str, tuple[int, ...]] = {}
    input_names: list[str] = []
    output_name = ""
    for node in fx_graph.nodes:
        names_of[node] = node.name
        shape = _shape_of(node.meta.get("val"))
        if node.op == "placeholder":
            if node.name in to_param:
                key = canon.get(to_param[node.name], to_param[node.name])
                g.add_node(node.name, kind="param", param=key, shape=shape, target=None, args=())
                param_shapes[key] = shape
            elif node.name in to_buffer:
                buf = buffers.get(to_buffer[node.name])
                value = (buf.detach().clone() if buf is not None and not torch.is_floating_point(buf)
                         and buf.numel() <= 1 << 20 and buf.dtype != torch.bool else None)
                g.add_node(node.name, kind="buffer", param=to_buffer[node.name], shape=shape, target=None, args=(),
                           value=value)
            else:
                g.add_node(node.name, kind="input", shape=shape, target=None, args=())
                input_names.append(node.name)
        elif node.op == "get_attr":
            g.add_node(node.name, kind="const", shape=shape, target=None, args=())
        elif node.op == "call_function":
            args = tuple(_convert_arg(a, names_of) for a in node.args)
            kwargs = {k: _convert_arg(v, names_of) for k, v in node.kwargs.items()}
            g.add_node(node.name, kind="op", target=op_name(node.target), args=args, kwargs=kwargs, shape=shape)
            _add_edges(g, node.name, args)
        elif node.op == "output":
            outs = [a for a in torch.utils._pytree.tree_leaves(node.args) if isinstance(a, torch.fx.Node)]
            if len(outs) != len(names):
                raise CaptureError(f"the traced graph returns {len(outs)} tensors, the model {len(names)}")
            output_name = names_of[outs[out_i]]
        else:
            raise CaptureError(f"unsupported graph node {node.op} {node.target}")
    out_shape = g.nodes[output_name]["shape"]
    g.add_node("loss", kind="loss", target=f"loss.{loss}", args=(("node", output_name),), shape=(), kwargs={})
    g.add_edge(output_name, "loss", pos=(0,))
    if loss == "cross_entropy" and (out_shape is None or len(out_shape) < 2):
        warnings.append(f"cross-entropy expects [batch, classes] or [batch, …, classes] logits, got {out_shape}; "
                        "no translation symmetry assumed")
    keep = nx.ancestors(g, "loss") | {"loss"}
    g.remove_nodes_from([n for n in list(g.nodes) if n not in keep and g.nodes[n]["kind"] in ("op", "const")])
    return CapturedGraph(g, param_shapes, input_names, output_name, loss, method, warnings)


def _add_edges(g: nx.DiGraph, dst: str, args: tuple, prefix: tuple = ()) -> None:
    for i, a in enumerate(args):
        if isinstance(a, tuple) and len(a) == 2 and a[0] == "node":
            pos = prefix + (i,)
            if g.has_edge(a[1], dst):
                g.edges[a[1], dst]["pos"] = g.edges[a[1], dst]["pos"] + (pos,)
            else:
                g.add_edge(a[1], dst, pos=(pos,))
        elif isinstance(a, (list, tuple)):
            _add_edges(g, dst, tuple(a), prefix + (i,))
