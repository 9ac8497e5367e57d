"""Architecture report, no run needed: ``nmech report MODEL_SPEC``.

From the analysis JSON (``nmech analyze --json``): per layer (module) the symmetry groups of each kind and
how many, the layers with none and the reasons the analyzer gives, the GL(r) pairs, the conserved quantities
and their laws under a chosen optimizer as formulas, and a diagram of the layers in network order with
the groups marked — coloured counts per kind, and arcs for the rescale groups that tie a producer to the
layers that consume its channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from symmetry_engine.symmetry import KINDS  # noqa: E402

from .figures import save_figure  # noqa: E402
from .natsort import natsorted  # noqa: E402
from .report_doc import Bullets, Document, Figure, Para, Section, Table  # noqa: E402
from .report_sections import laws_section  # noqa: E402

KIND_COLOURS = {"translation": "#4c78a8", "scale": "#f58518", "rescale": "#54a24b", "gl": "#b279a2"}
MAX_DIAGRAM_LAYERS = 90


def module_of(param: str) -> str:
    return param.rsplit(".", 1)[0] if "." in param else param


@dataclass
class LayerInfo:
    """What the analysis says about one module (a prefix of parameter names)."""

    name: str
    params: dict[str, list[int]] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    consumes_from: dict[str, int] = field(default_factory=dict)   # rescale: producer module → groups
    coupled_to: dict[str, int] = field(default_factory=dict)      # also scaled up in groups owned by another module
    gl: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.groups.values()) + sum(self.consumes_from.values()) + sum(self.coupled_to.values()) + len(self.gl)


def layer_table(analysis: Mapping[str, Any]) -> dict[str, LayerInfo]:
    """Modules in network order (the order of ``parameters``) with their groups."""
    layers: dict[str, LayerInfo] = {}
    for p, shape in (analysis.get("parameters") or {}).items():
        layers.setdefault(module_of(p), LayerInfo(module_of(p))).params[p] = list(shape)
    for s in analysis.get("symmetries") or []:
        plus = list(dict.fromkeys(module_of(m["param"]) for m in s["members"] if m.get("sign", 1) > 0))
        minus = list(dict.fromkeys(module_of(m["param"]) for m in s["members"] if m.get("sign", 1) < 0))
        owner = plus[0] if plus else module_of(s["members"][0]["param"])
        info = layers.setdefault(owner, LayerInfo(owner))
        info.groups[s["kind"]] += 1
        for m in plus[1:]:  # a residual add couples producers: they scale together with the owner
            c = layers.setdefault(m, LayerInfo(m))
            c.coupled_to[owner] = c.coupled_to.get(owner, 0) + 1
        if s.get("note") and s["note"] not in info.notes and len(info.notes) < 2:
            info.notes.append(s["note"])
        if s["kind"] == "rescale":
            for m in minus:
                if m != owner:
                    c = layers.setdefault(m, LayerInfo(m))
                    c.consumes_from[owner] = c.consumes_from.get(owner, 0) + 1
    for g in analysis.get("matrix_symmetries") or []:
        members = g.get("members") or []
        first = g.get("first_weight") or (members[0]["param"] if members else g.get("layer") or "?")
        second = g.get("second_weight") or (members[-1]["param"] if len(members) > 1 else None)
        label = f"GL({g.get('hidden', g.get('r'))})" + (f" with {module_of(second)}" if second else "")
        layers.setdefault(module_of(first), LayerInfo(module_of(first))).gl.append(label)
    return layers


def layer_type(info: LayerInfo) -> str:
    """A guess from the weight's rank, for the reader only (conv, linear, norm); '' when unsure."""
    shape = next((s for p, s in info.params.items() if p.endswith("weight")), None)
    return {4: "conv", 5: "conv3d", 3: "conv1d", 2: "linear", 1: "norm"}.get(len(shape), "") if shape else ""


def _param_text(info: LayerInfo) -> str:
    return ", ".join(f"{p.rsplit('.', 1)[-1]} {'×'.join(map(str, s)) or 'scalar'}" for p, s in info.params.items())


ROW_IN = 0.34            # inches per layer row
MONO_IN, SANS_IN = 0.0625, 0.045   # approximate character widths (inches) of the name and parameter fonts


def diagram(layers: Mapping[str, LayerInfo], title: str) -> MplFigure:
    """Layers top to bottom in network order; per kind a coloured cell with its group count; arcs on the
    left from a rescale producer to each layer consuming its channels (labelled with the group count);
    dashed arcs on the right join layers a residual add couples into the same groups.

    Horizontal data units are inches, so columns are placed after the longest name and parameter text.
    """
    names = list(layers)[:MAX_DIAGRAM_LAYERS]
    n = len(names)
    left = 1.7
    name_w = MONO_IN * max((len(x) for x in names), default=4)
    type_x = left + 0.15 + name_w
    param_w = SANS_IN * max((len(_param_text(layers[x])) for x in names), default=4)
    box_end = type_x + 0.55 + param_w + 0.1
    cols = {k: box_end + 0.35 + i * 0.8 for i, k in enumerate(("translation", "scale", "rescale", "gl"))}
    width = cols["gl"] + 0.9
    height = 1.0 + ROW_IN * (n + 1.5)
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1 - 0.45 / height))
    ax.set_xlim(0, width)
    ax.set_ylim(n - 0.4, -1.3)
    ax.axis("off")
    y = {name: i for i, name in enumerate(names)}
    for kind, x in cols.items():
        ax.text(x + 0.32, -0.85, kind if kind != "gl" else "GL(r)", ha="center", va="center", fontsize=8,
                color=KIND_COLOURS[kind], fontweight="bold")
    for name in names:
        info, i = layers[name], y[name]
        ax.add_patch(Rectangle((left, i - 0.38), box_end - left, 0.76, facecolor="#f4f6fa" if info.total else "#fbeaea",
                               edgecolor="#9aa3b5", lw=0.7, gid=f"layer|{name}"))
        ax.text(left + 0.08, i, name, va="center", fontsize=7.5, family="monospace")
        ax.text(type_x, i, layer_type(info), va="center", fontsize=6.5, color="#2457a6", style="italic")
        ax.text(box_end - 0.08, i, _param_text(info), va="center", ha="right", fontsize=6, color="#5b6272")
        counts = {**info.groups, "gl": len(info.gl)}
        for kind, x in cols.items():
            c = counts[kind]
            if c:
                ax.add_patch(Rectangle((x, i - 0.34), 0.64, 0.68, facecolor=KIND_COLOURS[kind], alpha=0.85, lw=0,
                                       gid=f"count|{kind}|{name}|{c}"))
                ax.text(x + 0.32, i, str(c), ha="center", va="center", fontsize=7, color="white", fontweight="bold")

    def bulge(a: int, b: int) -> float:
        """arc3 radius keeping the arc's excursion (≈ rad·distance/2) inside the left margin."""
        return min(0.8, 2 * (left - 0.35) / max(ROW_IN * abs(b - a), 1e-9))

    for name in names:
        for producer, c in layers[name].consumes_from.items():
            if producer not in y:
                continue
            a, b = y[producer], y[name]
            rad = bulge(a, b)
            side = rad if b > a else -rad   # bulge into the left margin whichever way the link runs
            ax.add_patch(FancyArrowPatch((left, a), (left, b), connectionstyle=f"arc3,rad={side}", arrowstyle="-|>",
                                         mutation_scale=7, color=KIND_COLOURS["rescale"], lw=1.0, alpha=0.8,
                                         gid=f"link|{producer}|{name}|{c}"))
            ax.text(left - rad * ROW_IN * abs(b - a) / 2 - 0.05, (a + b) / 2, str(c), fontsize=6, ha="right",
                    va="center", color=KIND_COLOURS["rescale"])
        for owner, c in layers[name].coupled_to.items():
            if owner in y:
                bend = -0.3 if y[name] > y[owner] else 0.3
                ax.add_patch(FancyArrowPatch((box_end, y[owner]), (box_end, y[name]), connectionstyle=f"arc3,rad={bend}",
                                             arrowstyle="-", color="#8c6d31", lw=0.9, ls="--", alpha=0.8,
                                             gid=f"coupled|{owner}|{name}|{c}"))
    ax.text(0.1, -0.85, "rescale links\n(producer → consumer)", fontsize=7, color=KIND_COLOURS["rescale"], va="center")
    if len(layers) > n:
        ax.text(left, n - 0.1, f"… {len(layers) - n} more layers not drawn", fontsize=8, color="#5b6272")
    fig.suptitle(title, fontsize=10)
    return fig


def arch_document(analysis: Mapping[str, Any], opt_meta: Mapping[str, Any], out: Path) -> Document:
    """The architecture report (figures written into ``out``)."""
    model = analysis.get("model") or {}
    spec = model.get("spec", "?")
    counts = analysis.get("counts") or {}
    layers = layer_table(analysis)
    doc = Document(f"Architecture report: `{spec}`", [Para(
        f"Input {','.join(map(str, model.get('input_shape') or []))} (one sample), loss {analysis.get('loss')}, "
        f"captured with {analysis.get('capture')}. Symmetry groups: "
        + ", ".join(f"**{counts.get(k, 0)} {k}**" for k in KINDS)
        + (f", **{len(analysis.get('matrix_symmetries') or [])} GL(r)**" if analysis.get("matrix_symmetries") else "")
        + f" over {len(layers)} layers. No training run is needed for this report.")])
    rows = []
    for name, info in natsorted(layers.items(), key=lambda kv: kv[0]):
        consumes = "; ".join([f"{c} from `{p}`" for p, c in info.consumes_from.items()]
                             + [f"scaled with `{o}` in {c}" for o, c in info.coupled_to.items()])
        rows.append([f"`{name}`", _param_text(info), *[info.groups[k] or "" for k in KINDS], consumes,
                     ", ".join(info.gl), "; ".join(info.notes) if info.total else "**none**"])
    doc.sections.append(Section("Symmetries per layer", [Table(
        ["layer", "parameters", *KINDS, "rescale as consumer or co-producer", "GL(r)", "why / note"], rows, numeric=False,
        caption="Groups per layer (natural order of names): a group counts at the layer whose parameters it "
                "scales up (sign +1); a rescale group's consumer (the layer whose input slice it scales down) is "
                "listed apart, as is a co-producer a residual add couples to the owner. Layers marked none have no symmetry the analyzer can prove; the reasons follow.")]))
    why: list[str] = [f"{reason}: {n} channel(s)" for reason, n in (analysis.get("blocked") or {}).items()]
    if analysis.get("unknown_ops"):
        why.append("ops missing from the op-semantics table (they block every symmetry through them): "
                   + ", ".join(f"`{o}`" for o in analysis["unknown_ops"]))
    why += [f"warning: {w}" for w in analysis.get("warnings") or []]
    doc.sections.append(Section("Where there is no symmetry, and why", [
        Para("Channels without a scale or rescale symmetry, by the first reason the analyzer found:"),
        Bullets(why or ["every channel has a symmetry"])]))
    kinds = [k for k in KINDS if counts.get(k)]
    laws = laws_section(kinds, opt_meta)
    if laws is not None:
        laws.title = "Conserved quantities and their laws"
        doc.sections.append(laws)
    fig = diagram(layers, f"{spec}: layers in network order, symmetry groups per kind")
    doc.sections.append(Section("Layer diagram", [Figure(
        save_figure(fig, out / "architecture.png", dpi=100), "Layers and their symmetry groups",
        "Each box is a layer (module with parameters) in network order, top to bottom; red boxes have no symmetry. "
        "The coloured cells give the number of groups of each kind owned by the layer. Green arcs on the left join "
        "a rescale producer to each layer that consumes its channels, labelled with the number of groups; dashed "
        "brown arcs on the right join layers a residual add couples into one group (they are scaled together).")]))
    return doc


__all__ = ["arch_document", "layer_table", "diagram", "LayerInfo"]
