"""Report and figures: files written, contents consistent with the evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from .test_evaluate import run_with_checkpoints
from .test_tracker import MOMENTUM, toy_symmetries

from analyses.figures import pick_groups, pick_layer  # noqa: E402
from analyses.report import render_markdown, write_report  # noqa: E402
from symmetry_engine.numeric.evaluate import evaluate_run  # noqa: E402
from symmetry_engine.numeric.classes import OptimizerClass  # noqa: E402
from symmetry_engine.numeric.layout import RecordLayout  # noqa: E402
from symmetry_engine.numeric.runlog import RunWriter  # noqa: E402
from symmetry_engine.symmetry import Member, Symmetry  # noqa: E402


def test_report_files_and_contents(tmp_path):
    run_with_checkpoints(tmp_path / "r", MOMENTUM, 30, every=10)
    ev = evaluate_run(tmp_path / "r")
    md = write_report(ev, tmp_path / "r" / "report")
    out = md.parent
    assert md.name == "report.md"
    text = md.read_text()
    for part in ("## Conservation laws per kind", "## Per layer", "## Optimizer", "## Checkpoint cross-check",
                 "## Re-run", "nmech evaluate", "| scale | 4 |", "| rescale | `conv2` | 3 |",
                 "![conservation](conservation.png)", "`step_00000030.pt` | 30 |"):
        assert part in text, part
    exact_max = ev.summary["scale"]["exact"]["max"]
    assert f"| scale | 4 | {exact_max:.2e} |" in text
    data = json.loads((out / "report.json").read_text())
    assert data["figures"] == ["conservation.png", "trajectories.png", "angular_update.png"]
    assert data["summary"]["rescale"]["groups"] == 7 and len(data["checkpoints"]) == 4
    for name in data["figures"]:
        raw = (out / name).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000


def test_panels_follow_the_kinds_present(tmp_path):
    """A run with only scale groups gets a one-panel Figure 5 (narrower image)."""
    from .test_tracker import batches, make_model
    import torch.nn.functional as F
    from symmetry_engine.numeric.tracker import Tracker

    syms = [s for s in toy_symmetries() if s.kind == "scale"]
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = Tracker(model, opt, tmp_path / "r", syms)
    for xb, yb in batches(5):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    tr.close()
    ev = evaluate_run(tmp_path / "r")
    write_report(ev, tmp_path / "out")
    import matplotlib.image as mpimg

    one = mpimg.imread(tmp_path / "out" / "conservation.png")
    assert list(ev.series) == ["scale"] and one.shape[1] < 700  # 1 panel ≈ 506 px wide, 3 panels ≈ 1518
    assert "No checkpoints" in (tmp_path / "out" / "report.md").read_text()


def test_layer_and_group_choice():
    syms = toy_symmetries()
    trans = [s for s in syms if s.kind == "translation"]
    assert pick_layer("translation", trans) == "fc"  # weight columns of the final linear layer
    resc = [s for s in syms if s.kind == "rescale"]
    assert pick_layer("rescale", resc) == "bn"  # most groups (4 vs 3)

    class S:
        symmetries = trans
    assert pick_groups(S, "fc", 4) == [0, 16, 31, 47]
    assert pick_groups(S, "fc.bias", 4) == [48]


def test_markdown_reports_warnings_and_missing_predictions(tmp_path):
    syms = [Symmetry("scale", (Member("conv1.weight", 0, (0,)),), "conv1", 0)]
    layout = RecordLayout(("scale",), ((0,),), 1, identity=True)
    classes = [OptimizerClass(0, 0, True, True, True, "adam", params=("conv1.weight",))]
    w = RunWriter(tmp_path / "r", {"optimizer": {"rule": "adam", "lr": 1e-3}}, syms, layout=layout, classes=classes)
    import numpy as np
    for n in range(3):  # header, class (lr, β1, d, λ, updated), N M Q G D U with N_{n+1} = N_n + 2U_n + D_n
        w.append(np.array([n, 0.0, 0.5, 1.0, 1e-3, 0.9, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.1, 0.01, -0.005]))
    w.abandon()  # crashed: no close record
    assert layout.record_size == 15
    ev = evaluate_run(tmp_path / "r", checkpoints=False)
    text = render_markdown(ev)
    assert "run not closed" in text and "## Warnings" in text
    # Adam has no law: the law and the continuous prediction are named as unavailable; the identity holds
    assert set(ev.prediction_errors) == {"scale/law", "scale/continuous"}
    assert "prediction unavailable for scale/law: Adam" in text
    assert ev.groups[0].err_exact == 0.0 and ev.groups[0].verdict == "holds"
    with pytest.raises(Exception):
        write_report(ev, tmp_path / "r" / "run.json" / "x")  # not a directory
