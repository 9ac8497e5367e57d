"""``nmech``: analyze, laws, train, evaluate, report, figures, demo.

Every sub-command exits 0 on success and, on bad input, prints one line ``nmech: error: ...`` to stderr
and exits 2 (set NMECH_DEBUG=1 to see the traceback instead); Ctrl-C exits 130 and SIGTERM 143, each with
one line. Every numeric option is checked at parse time (analyses.argtypes), and nothing here imports torch
before the arguments are parsed, so ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from analyses.argtypes import (EXIT_BAD_INPUT, HelpFormatter, OneLineParser, add_threads_argument, apply_threads,
                               nonneg_float, nonneg_int, positive_float, positive_int, unit_interval,
                               unit_interval_open)

EXIT_SIGTERM = 128 + 15


class CliError(Exception):
    """Bad input reported in one line."""


def _version() -> str:
    """The installed distribution's version, else the one pyproject.toml declares next to this package."""
    import importlib.metadata

    try:
        return importlib.metadata.version("neural-mechanics")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import tomllib

        from pathlib import Path

        return tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    except (ImportError, OSError, KeyError, ValueError):
        return "unknown"


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be integers like 3,32,32 or 20, got {text!r}") from None
    if not shape or any(v <= 0 for v in shape):
        raise argparse.ArgumentTypeError(f"input shape must be positive integers, got {text!r}")
    return shape


def _parse_model_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="zoo name (vgg16_bn), torchvision:NAME or package.module:callable")
    p.add_argument("--input-shape", type=_parse_shape, default=None, metavar="C,H,W",
                   help="one sample, no batch axis (e.g. 3,32,32 or 20); default: the model's own")
    p.add_argument("--loss", choices=("cross_entropy", "mse"), default="cross_entropy",
                   help="training loss whose symmetries are analysed")
    p.add_argument("--num-classes", type=positive_int, default=10, help="classes ≥ 1 of the model's output")
    p.add_argument("--input-dtype", choices=("float32", "int64"), default=None,
                   help="example input dtype: float32 (standard normal) or int64 token ids in [0, --input-max) "
                        "(default: the model's own, float32 when it declares none)")
    p.add_argument("--output", default=None, metavar="NAME|INDEX",
                   help="for models returning several tensors (GoogLeNet/Inception auxiliary heads, dicts): which one "
                        "is the logits the loss reads, by name (aux_logits1) or index (default: the first)")
    p.add_argument("--input-max", type=positive_int, default=None, metavar="V",
                   help="int64 inputs are drawn in [0, V), e.g. the vocabulary size (default: the model's own)")
    p.add_argument("--width", type=positive_float, default=None,
                   help="width multiplier > 0 for zoo models (default: the model's own)")
    p.add_argument("--model-kw", "--model-arg", dest="model_arg", type=_parse_model_arg, action="append", default=[],
                   metavar="KEY=VALUE", help="extra keyword for the zoo builder (JSON values), repeatable (default: none)")


def load_model(args: argparse.Namespace):
    """Build the model named on the command line and an example batch for it."""
    import torch

    from model_zoo import build_model

    kwargs = dict(args.model_arg)
    if args.width is not None:
        kwargs["width"] = args.width
    model, info = build_model(args.model, num_classes=args.num_classes, input_shape=args.input_shape, **kwargs)
    shape = args.input_shape or info.input_shape
    if shape is None:
        raise CliError(f"{args.model}: no default input shape; pass --input-shape C,H,W")
    dtype = getattr(args, "input_dtype", None) or info.input_dtype
    gen = torch.Generator().manual_seed(0)
    if dtype == "int64":
        vmax = getattr(args, "input_max", None) or info.input_max
        if vmax is None:
            raise CliError(f"{args.model}: int64 inputs need --input-max V (e.g. the vocabulary size)")
        example = torch.randint(0, int(vmax), (2, *shape), generator=gen)
    else:
        example = torch.randn((2, *shape), generator=gen)
    return model, info, example


def _optimizer_config(args: argparse.Namespace):
    from symmetry_engine.numeric.predict import OptimizerConfig

    return OptimizerConfig(rule="sgd", lr=args.lr, momentum=args.momentum, dampening=args.dampening,
                           nesterov=args.nesterov, weight_decay=args.weight_decay,
                           decoupled_weight_decay=args.decoupled_weight_decay)


# -- analyze ------------------------------------------------------------------------------------------
def _analysis_options(args: argparse.Namespace, certify: bool) -> dict[str, Any]:
    """Everything besides the spec that changes an analysis (the cache key)."""
    return {"input_shape": args.input_shape, "loss": args.loss, "num_classes": args.num_classes,
            "input_dtype": getattr(args, "input_dtype", None), "input_max": getattr(args, "input_max", None),
            "output": getattr(args, "output", None),
            "width": args.width, "model_arg": sorted(args.model_arg), "certify": certify,
            "certify_batch": getattr(args, "certify_batch", None) if certify else None,
            "certify_samples": getattr(args, "certify_samples", None) if certify else None}


def cached_analysis(args: argparse.Namespace, certify: bool, before_store: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """The analysis JSON of the named model, from the on-disk cache when the spec allows it.

    ``before_store`` sees a fresh analysis before it is written to the cache (so a waiting caller can go on).
    """
    from analyses import analysis_cache

    key = None if getattr(args, "no_cache", False) else analysis_cache.cache_key(args.model, _analysis_options(args, certify))
    data = analysis_cache.load(key)
    if data is not None:
        return data
    from symmetry_engine.graph.analysis import analyze

    model, _, example = load_model(args)
    result = analyze(model, example, loss=args.loss, certify_symmetries=certify, output=getattr(args, "output", None),
                     batch_size=getattr(args, "certify_batch", 8), samples=getattr(args, "certify_samples", 16))
    data = result.to_json()
    data["model"] = {"spec": args.model, "input_shape": list(example.shape[1:]), "num_classes": args.num_classes}
    if before_store is not None:
        before_store(data)
    analysis_cache.store(key, data)
    return data


def cmd_analyze(args: argparse.Namespace) -> int:
    if getattr(args, "graph", None):
        data = _analysis_with_graph(args)
    else:
        data = cached_analysis(args, certify=args.certify)
    if getattr(args, "count_laws", False):
        data = {**data, "law_count": _count_laws(data)}
    if args.json:
        json.dump(data, sys.stdout, indent=None if args.compact else 1)
        sys.stdout.write("\n")
    else:
        print(format_analysis(data))
        if "law_count" in data:
            lc = data["law_count"]
            print(f"conservation laws: {lc['count']} independent (rank of the Jacobian of {lc['functions']} conserved "
                  f"functions at a random point: " + ", ".join(f"{k} {v}" for k, v in lc["by_family"].items())
                  + f"; singular-value gap {lc['smallest_kept']:.1e} kept / {lc['largest_dropped']:.1e} dropped)")
    if args.certify and not data["certification"]["all_certified"]:
        return 1
    return 0


def _analysis_with_graph(args: argparse.Namespace) -> dict[str, Any]:
    """``--graph FILE``: a fresh analysis (the cache keeps no graph), its graph written as GraphML or
    node-link JSON, and a drawing beside it (same stem, .svg and .png)."""
    from pathlib import Path

    from symmetry_engine.graph.export import GRAPH_SUFFIXES

    target = Path(args.graph)
    if target.suffix.lower() not in GRAPH_SUFFIXES:
        raise CliError(f"--graph file must end in .graphml or .json, got {target.name!r}")
    if not target.parent.is_dir():
        raise CliError(f"--graph: directory {str(target.parent)!r} does not exist")
    from analyses.graph_figure import draw_graph
    from symmetry_engine.graph.analysis import analyze
    from symmetry_engine.graph.export import write_graph

    model, _, example = load_model(args)
    result = analyze(model, example, loss=args.loss, certify_symmetries=args.certify,
                     batch_size=args.certify_batch, samples=args.certify_samples)
    g = write_graph(result, target)
    drawings = draw_graph(g, target, title=f"{args.model}: {g.number_of_nodes()} nodes, "
                                           f"{len(result.matrix_symmetries)} matrix groups")
    print(f"graph: {target} ({g.number_of_nodes()} nodes, {g.number_of_edges()} edges); drawing: "
          + ", ".join(map(str, drawings)), file=sys.stderr)
    data = result.to_json()
    data["model"] = {"spec": args.model, "input_shape": list(example.shape[1:]), "num_classes": args.num_classes}
    return data


def _count_laws(data: dict[str, Any]) -> dict[str, Any]:
    """``--count-laws``: independent conservation laws of the analysis (symmetry_engine.numeric.law_count)."""
    from symmetry_engine.numeric.law_count import law_count_report

    return law_count_report(data["symmetries"], data.get("matrix_symmetries") or [], data["parameters"]).to_json()


def format_analysis(data: dict[str, Any]) -> str:
    """Human-readable summary of an analysis JSON (one line per kind and layer)."""
    model = data.get("model", {})
    lines = [f"{model.get('spec')}  input {','.join(map(str, model.get('input_shape', [])))}  loss {data['loss']}  "
             f"(captured with {data['capture']})",
             "symmetries: " + ", ".join(f"{k} {v}" for k, v in data["counts"].items())]
    matrix = data.get("matrix_symmetries") or []
    if matrix:
        kinds: dict[str, int] = {}
        for m in matrix:
            note = m.get("note", "")
            k = "query/key" if "query/key" in note else "value/output" if "value/output" in note else "pairs"
            kinds[k] = kinds.get(k, 0) + 1
        sub = sum(m.get("basis") is not None for m in matrix)
        lines.append(f"matrix symmetries: {len(matrix)} (" + ", ".join(f"{k} {v}" for k, v in kinds.items())
                     + (f"; {sub} rotary subgroups" if sub else "") + ")")
    per_layer: dict[tuple[str, str], list[dict]] = {}
    for s in data["symmetries"]:
        per_layer.setdefault((s["kind"], s["layer"]), []).append(s)
    lines.append(f"{'kind':<12} {'layer':<32} groups  example members")
    for (kind, layer), syms in per_layer.items():
        ex = "; ".join(f"{'+' if m['sign'] > 0 else '-'}{m['param']}"
                       + ("" if m["axis"] is None else f"[ax{m['axis']}:{_idx(tuple(m['indices']))}]")
                       for m in syms[0]["members"])
        lines.append(f"{kind:<12} {layer:<32} {len(syms):>6}  {ex}")
    lines += format_matrix_lines(data.get("matrix_symmetries") or [])
    if data["unknown_ops"]:
        lines.append("unknown ops (blocking): " + ", ".join(data["unknown_ops"]))
    blocked = list(data.get("blocked", {}).items())
    if blocked:
        lines.append("channels without a scale/rescale symmetry, by first reason: "
                     + "; ".join(f"{why} ({n})" for why, n in blocked[:4]) + ("; …" if len(blocked) > 4 else ""))
    for w in data["warnings"]:
        lines.append("warning: " + w)
    cert = data.get("certification")
    if cert is not None:
        res = cert["results"]
        bad = [c for c in res if not c["certified"]]
        top = lambda key: max((c[key] for c in res), default=0.0)  # noqa: E731
        lines.append(f"certified: {len(res) - len(bad)}/{len(res)}  (max |<g,xi>|/(|g||xi|) = {top('grad_rel'):.1e}, "
                     f"max joint loss change = {top('loss_rel_joint'):.1e}; at the model's eps="
                     f"{data['normalizer_eps']:g}: max gradient breaking {top('eps_grad_rel'):.1e})")
        for c in bad[:20]:
            lines.append(f"  NOT certified: {c['key']} grad {c['grad_rel']:.1e} "
                         f"loss {c['loss_rel_single'] or c['loss_rel_joint']:.1e}")
    return "\n".join(lines)


def format_matrix_lines(matrix: list[dict[str, Any]]) -> list[str]:
    """One line per matrix symmetry (member form): group, layer, note, members acting by M and by M⁻ᵀ."""
    from symmetry_engine.matrix_symmetry import GLSymmetry

    lines = []
    for raw in matrix:
        s = GLSymmetry.from_json(raw)
        group = f"GL({s.r})" if s.basis is None else f"subgroup of GL({s.r}), dim {len(s.basis)}"
        side = lambda act: ", ".join(f"{m.param}[ax{m.axis}:{_idx(m.indices)}]" for m in s.members if m.act == act)  # noqa: E731
        laws = f"; {raw['laws']} independent laws" if raw.get("laws") is not None else ""
        lines.append(f"{'gl':<12} {s.layer:<32} {1:>6}  {group} {s.note}: M · {side('M')}; M⁻ᵀ · {side('M^-T')}{laws}")
    return lines


def _idx(indices: tuple[int, ...]) -> str:
    if len(indices) > 3 and list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}..{indices[-1]}"
    return ",".join(map(str, indices))


# -- laws ---------------------------------------------------------------------------------------------
def cmd_laws(args: argparse.Namespace) -> int:
    from analyses.laws_text import render_laws

    matrix, shapes = None, None
    if args.kinds:
        kinds = [k for k in args.kinds.split(",") if k]
        unknown = set(kinds) - {"translation", "scale", "rescale", "gl"}
        if unknown:
            raise CliError(f"unknown symmetry kind(s) {', '.join(sorted(unknown))}; use translation, scale, rescale, gl")
        if "gl" in kinds:
            kinds.remove("gl")
            matrix = []        # the generic section (a Linear pair), no model
    else:
        kinds, found, shapes = _kinds_present(args)
        matrix = found or None
    fmt = "json" if args.json else "latex" if args.latex else "text"
    print(render_laws(kinds, _optimizer_config(args), fmt, matrix=matrix, shapes=shapes))
    return 0


def _kinds_present(args: argparse.Namespace) -> tuple[list[str], list[dict], dict[str, list[int]]]:
    """Symmetry kinds of the named model. On an analysis-cache miss the analysis (torch import + export,
    the slow part) runs in a forked child while this process derives the laws for every kind with sympy,
    so a first `nmech laws MODEL` costs about the larger of the two, not their sum."""
    import multiprocessing as mp

    from analyses import analysis_cache
    from symmetry_engine.symbolic import derive_laws

    def kinds_of(data: dict[str, Any]) -> tuple[list[str], list[dict], dict[str, list[int]]]:
        """Scalar kinds present, matrix symmetries (any JSON form) and parameter shapes."""
        return ([k for k, n in data["counts"].items() if n], list(data.get("matrix_symmetries") or []),
                dict(data.get("parameters") or {}))

    def present(data: dict[str, Any]) -> dict[str, Any]:
        return {k: data.get(k) for k in ("counts", "matrix_symmetries", "parameters")}

    key = None if args.no_cache else analysis_cache.cache_key(args.model, _analysis_options(args, certify=False))
    cached = analysis_cache.load(key)
    if cached is not None or "fork" not in mp.get_all_start_methods():
        return kinds_of(cached or cached_analysis(args, certify=False))
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def work() -> None:
        try:
            cached_analysis(args, certify=False, before_store=lambda data: send.send(("ok", present(data))))
        except BaseException as exc:  # noqa: BLE001 - reported by the parent in one line
            send.send(("error", " ".join(str(exc).split()) or type(exc).__name__))

    child = ctx.Process(target=work, daemon=True)
    child.start()
    spec = _optimizer_config(args).rule_spec()
    for kind in ("translation", "scale", "rescale"):
        derive_laws(kind, spec)  # warms the engine's cache while the child analyzes
    status, value = receive.recv() if receive.poll(600) else ("error", "the analysis did not finish in 10 minutes")
    if status == "error":
        child.join()
        raise CliError(value)
    import atexit

    atexit.register(child.join)  # the child is still writing the analysis cache; let it finish
    return kinds_of(value)


def add_optimizer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lr", type=positive_float, default=0.1, help="learning rate η > 0")
    p.add_argument("--momentum", type=unit_interval_open, default=0.0, help="heavy-ball momentum β in [0, 1)")
    p.add_argument("--dampening", type=unit_interval, default=0.0, help="momentum dampening d in [0, 1]")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    p.add_argument("--weight-decay", type=nonneg_float, default=0.0, help="weight decay λ ≥ 0")
    p.add_argument("--decoupled-weight-decay", action="store_true",
                   help="SGDW/AdamW-style weight decay θ ← (1−ηλ)θ − η·update")


# -- evaluate / report / train / demo (implemented in analyses.commands) ------------------------------
def _lazy(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from analyses import commands

        return getattr(commands, name)(args)

    return run


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; the training options (which import the model zoo) only when ``train`` is asked for."""
    parser = OneLineParser(prog="nmech", description="Symmetries and conservation laws of neural-network training.")
    parser.add_argument("--version", action="version", version=f"nmech {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)

    p = sub.add_parser("analyze", help="list a model's symmetries with exact parameter slices")
    add_model_arguments(p)
    p.add_argument("--certify", action="store_true", help="check every symmetry numerically (float64)")
    p.add_argument("--certify-batch", type=positive_int, default=8, help="batch size ≥ 1 of the certification batch")
    p.add_argument("--certify-samples", type=nonneg_int, default=16, help="groups ≥ 0 per kind also checked one by one")
    p.add_argument("--json", action="store_true", help="print one JSON object (schema: docs/json_schema.md)")
    p.add_argument("--compact", action="store_true", help="JSON on one line")
    p.add_argument("--no-cache", action="store_true", help="ignore the on-disk analysis cache")
    p.add_argument("--count-laws", action="store_true",
                   help="also count the independent conservation laws (Jacobian rank at a random point)")
    p.add_argument("--graph", metavar="FILE", default=None,
                   help="write the analysed graph (FILE.graphml or FILE.json, node-link) with each node's op, "
                        "shape, feature axis and groups, and a drawing beside it (.svg, .png) (default: none)")
    add_threads_argument(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("laws", help="print the conservation laws of a model's symmetries under an optimizer")
    add_model_arguments(p)
    add_optimizer_arguments(p)
    p.add_argument("--kinds", default="", help="skip the analysis: comma-separated kinds (translation,scale,rescale,gl) "
                                               "(default: the kinds the model has)")
    p.add_argument("--no-cache", action="store_true", help="ignore the on-disk analysis cache")
    add_threads_argument(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--latex", action="store_true", help="print the laws as LaTeX")
    fmt.add_argument("--json", action="store_true", help="print the laws as JSON")
    p.set_defaults(func=cmd_laws)

    p = sub.add_parser("train", help="train a zoo model with the tracker on (writes a run directory)")
    if list(argv[:1]) == ["train"]:
        from model_zoo.train_cli import add_train_arguments  # torch-free: parsing `train` imports no torch

        add_train_arguments(p)
    p.set_defaults(func=_lazy("cmd_train"))

    p = sub.add_parser("evaluate", help="hold a run (log and checkpoints), or checkpoints alone, against the laws")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", default=None, help="a tracked run directory")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.add_argument("--no-checkpoints", action="store_true", help="skip the checkpoint cross-check")
    p.add_argument("--strict", action="store_true", help="exit 1 when any symmetry group is broken")
    from analyses.checkpoint_args import add_checkpoint_arguments

    add_checkpoint_arguments(p, _parse_shape, _parse_model_arg)
    p.set_defaults(func=_lazy("cmd_evaluate"))

    p = sub.add_parser("report", help="HTML + Markdown report of a run, of several runs side by side, or of a model")
    from analyses.report_cli import add_report_arguments

    add_report_arguments(p)
    p.set_defaults(func=_lazy("cmd_report"))

    p = sub.add_parser("figures", help="the paper's Figures 3 and 4 (geometries; modified dynamics on a quadratic)")
    p.add_argument("--out", default="runs/figures", help="directory of the figures")
    p.set_defaults(func=_lazy("cmd_figures"))

    p = sub.add_parser("demo", help="train VGG-16 with and without BN on digits, evaluate, write a report")
    p.add_argument("--out", default="runs/demo", help="directory of the two runs and the report")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps ≥ 1 per run (default: the presets' 300 with BN, 600 without)")
    p.add_argument("--width", type=positive_float, default=0.125, help="VGG width multiplier > 0")
    add_threads_argument(p)
    p.set_defaults(func=_lazy("cmd_demo"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from symmetry_engine.numeric.runlock import Terminated, sigterm_raises

    try:
        with sigterm_raises():   # SIGTERM like Ctrl-C: writers flush and release their run directory
            apply_threads(getattr(args, "threads", None))
            return int(args.func(args) or 0)
    except Terminated:
        print("nmech: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print("nmech: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - the contract is one line, not a traceback
        if os.environ.get("NMECH_DEBUG"):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"nmech: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
