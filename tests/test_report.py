"""Run report: files, sections, figures checked by numbers, natural sort, self-contained HTML in Chromium."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch

from analyses.figures import choose_panels, conservation_figure, lines_by_gid, pick_groups, pick_layer
from analyses.figures_run import checkpoint_samples, moving_average, trajectories_figure, training_figure
from analyses.natsort import natsorted, natural_key
from analyses.report import render_markdown, write_report
from analyses.report_doc import to_markdown
from analyses.report_sections import layers_section
from analyses.run_info import read_eval_log
from symmetry_engine.numeric.evaluate import evaluate_run
from symmetry_engine.numeric.classes import OptimizerClass
from symmetry_engine.numeric.layout import RecordLayout
from symmetry_engine.numeric.runlog import RunWriter
from symmetry_engine.symmetry import Member, Symmetry

from .chromium import HOW_TO_GET, check_page, find_chromium
from .report_fixtures import attach_law, contract_json, toy_run
from .test_tracker import toy_symmetries

DEGENERATE = [f"translation:conv1.bias[{c}]" for c in range(3)]   # zero-gradient biases before BN (really so)
BROKEN, APPROX = "rescale:conv2[1]", "scale:conv1[0]"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    toy_run(d / "r", steps=30, every=10)
    return d, evaluate_run(d / "r")


@pytest.fixture(scope="module")
def plain(toy):
    """The report of today's evaluation JSON."""
    d, ev = toy
    return write_report(ev, d / "plain")


@pytest.fixture(scope="module")
def contract(toy):
    """The report of an evaluation in the nmech-evaluation/2 shape (synthetic verdicts, law and classes)."""
    d, ev = toy
    ev = copy.deepcopy(ev)
    attach_law(ev)
    data = contract_json(ev, degenerate=DEGENERATE, broken=[BROKEN], approximate=[APPROX])
    return ev, data, write_report(ev, d / "contract", layers=["conv1.bias", "conv2"], channels=3, data=data)


def test_report_files_and_sections(plain, toy):
    _, ev = toy
    out = plain.parent
    text = plain.read_text()
    for part in ("## Configuration", "## Conservation laws per kind", "## Training", "(Figure 5)", "(Figure 1)",
                 "## The laws evaluated", "## Per layer", "## Checkpoint cross-check", "## Re-run", "nmech evaluate",
                 "| rescale | `conv2` | 3 |", "`step_00000030.pt` | 30 |", "Final test accuracy 0.800 at step 30"):
        assert part in text, part
    assert f"| scale | 4 | {ev.summary['scale']['exact']['max']:.2e} |" in text
    data = json.loads((out / "report.json").read_text())
    assert data["figures"] == ["training.png", "conservation.png", "trajectories.png", "angular_update.png"]
    for name in data["figures"]:
        raw = (out / name).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
        assert f"![" in text and f"]({name})" in text  # every figure is linked and captioned
    assert text.count("**Figure 5: conserved quantities and residuals.**") == 1
    assert (out / "report.html").stat().st_size > 50_000


def test_figure5_plots_the_evaluation_series(contract):
    """Each plotted line equals the series it comes from; degenerate groups are never picked."""
    ev, data, _ = contract
    panels = choose_panels(ev, data, layers=["conv1.bias", "conv2"], channels=3)
    by_kind = {p.kind: p for p in panels}
    # conv1.bias has 4 translation groups, 3 degenerate: the one left is shown, the others are counted apart
    assert by_kind["translation"].layer == "conv1.bias" and by_kind["translation"].keys == ["translation:conv1.bias[3]"]
    assert by_kind["translation"].left_out_degenerate == 3
    assert by_kind["rescale"].layer == "conv2" and len(by_kind["rescale"].keys) == 3
    assert by_kind["scale"].layer == "conv1"   # not requested: the default
    fig = conservation_figure(ev, panels, unit_roundoff=2.0**-53)
    lines = lines_by_gid(fig)
    checked = 0
    for p in panels:
        ser = ev.series[p.kind]
        for j, key in zip(p.groups, p.keys):
            assert key not in DEGENERATE
            norm = float(np.max(np.abs(ser.norm))) if np.ndim(ser.norm) == 2 else float(ser.norm[j])
            for role, arr in (("measured", ser.measured), ("law", ser.law), ("continuous", ser.continuous)):
                ln = lines[f"{p.kind}|{role}|{key}"]
                assert np.array_equal(ln.get_xdata(), ev.steps) and np.array_equal(ln.get_ydata(), arr[:, j])
                checked += 1
            for role, arr in (("exact", ser.exact), ("law", ser.law), ("continuous", ser.continuous)):
                y = np.asarray(lines[f"{p.kind}|residual-{role}|{key}"].get_ydata(), dtype=float)
                want = np.abs(ser.measured[:, j] - arr[:, j]) / norm
                assert np.allclose(y[np.isfinite(y)], want[np.isfinite(y)], rtol=1e-12, atol=0)
                assert np.all(want[~np.isfinite(y)] == 0)   # only exact zeros are hidden from the log axis
                checked += 1
        assert fig.axes[[q.kind for q in panels].index(p.kind) + len(panels)].get_yscale() == "log"
    assert checked == 6 * sum(len(p.keys) for p in panels) and f"{'translation'}|exact|{DEGENERATE[0]}" not in lines


def test_verdicts_classes_and_warnings_reach_both_renderings(contract):
    _, data, md = contract
    text, page = md.read_text(), md.with_suffix(".html").read_text()
    for part in ("## Verdicts", "**3 degenerate**", "**1 broken**", "**1 approximate**", f"`{BROKEN}` | broken",
                 "breaking far above round-off (synthetic)", "synthetic note", "norms and biases",
                 "0.05 → 0.01 (range 0.01 … 0.05)", "synthetic warning: tracker attached after step 0",
                 "| law max | law median |", "unit_roundoff", "3 degenerate left out"):
        assert part in text, part
    assert 'class="v-broken"' in page and "norms and biases" in page and "synthetic warning" in page
    law_max = data["summary"]["rescale"]["law"]["max"]
    assert f"{law_max:.2e}" in text
    # the per-layer table lists verdict counts per layer
    assert re.search(r"\| rescale \| `conv2` \| 3 \| 2 holds, 1 broken \|", text)


def test_training_curves_are_the_logged_numbers(toy):
    d, ev = toy
    evals, notes = read_eval_log(ev.run_dir)
    assert len(evals) == 3 and not notes
    steps = np.asarray(ev.steps)[: len(ev.losses)]
    fig = training_figure(steps, ev.losses, ev.lrs, evals)
    lines = lines_by_gid(fig)
    assert np.array_equal(lines["train|minibatch_loss|"].get_ydata(), ev.losses)
    avg = next(v for k, v in lines.items() if k.startswith("train|loss_avg"))
    w = int(avg.get_gid().split("avg")[1].strip("|"))
    manual = [np.mean(ev.losses[max(0, i + 1 - w): i + 1]) for i in range(len(ev.losses))]
    assert np.allclose(avg.get_ydata(), manual, rtol=1e-12)
    assert list(lines["train|test_loss|"].get_xdata()) == [10, 20, 30]
    assert list(lines["train|test_loss|"].get_ydata()) == [r["test_loss"] for r in evals]
    assert list(lines["train|test_accuracy|"].get_ydata()) == [r["test_accuracy"] for r in evals]
    assert np.array_equal(lines["train|lr|"].get_ydata(), ev.lrs)
    assert np.isnan(moving_average(np.array([np.nan, np.nan]), 3)).all()


def test_figure1_entries_are_the_checkpoint_values(toy):
    _, ev = toy
    samples = checkpoint_samples(ev.run_dir, {"conv1": "conv1.weight"}, count=5)
    s = samples["conv1"]
    assert list(s.steps) == [0, 10, 20, 30] and s.values.shape == (4, 5) and len(set(s.indices)) == 5
    for row, step in zip(s.values, s.steps):
        w = torch.load(ev.run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]["conv1.weight"]
        assert np.array_equal(row, [float(w[i]) for i in s.indices])
    fig = trajectories_figure(ev, "scale", ["conv1"], samples)
    lines = lines_by_gid(fig)
    assert np.array_equal(lines["sample|conv1|2"].get_ydata(), s.values[:, 2])
    ser = ev.series["scale"]
    assert np.array_equal(lines["quantity|scale:conv1[3]"].get_ydata(), ser.measured[:, 3])
    assert not checkpoint_samples(ev.run_dir, {"conv1": "no.such.param"})  # missing parameter: no samples


def test_natural_sort_everywhere(plain):
    assert natsorted(["features.10", "features.3", "features.2.bias", "classifier.0"]) == \
        ["classifier.0", "features.2.bias", "features.3", "features.10"]
    assert natural_key("a1") < natural_key("a1b") and natural_key(None) < natural_key("0") < natural_key("a")
    rows = [{"kind": "scale", "layer": n, "groups": 1, "exact": {"max": 0.0, "median": 0.0},
             "continuous": {"max": 0.0, "median": 0.0}} for n in ("features.10", "features.3", "features.24")]
    text = to_markdown(type("D", (), {"title": "t", "intro": [], "sections": [layers_section({"layers": rows})]})())
    assert text.index("features.3`") < text.index("features.10`") < text.index("features.24`")
    ck = plain.read_text()
    assert ck.index("step_00000000.pt") < ck.index("step_00000010.pt") < ck.index("step_00000030.pt")


def test_html_is_self_contained(plain):
    page = plain.with_suffix(".html").read_text()
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    hrefs = re.findall(r'\bhref="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert all(h.startswith("#") for h in hrefs)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    figures = json.loads(plain.with_name("report.json").read_text())["figures"]
    assert sum(s.startswith("data:image/png") for s in srcs) == len(figures)
    assert sum(s.startswith("data:image/svg+xml") for s in srcs) >= 10   # formulas typeset locally


@pytest.mark.parametrize("which", ["plain", "contract"])
def test_html_renders_in_chromium(which, plain, contract, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip(HOW_TO_GET)
    md = plain if which == "plain" else contract[2]
    page = md.with_suffix(".html")
    seen = check_page(page, binary)
    (tmp_path / "screenshot.png").write_bytes(seen.screenshot)
    assert seen.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(seen.screenshot) > 50_000
    assert seen.console_errors == [] and seen.failed_requests == []
    assert all(u.startswith(("file:", "data:")) for u in seen.requests), seen.requests
    n_img = page.read_text().count("<img ")
    assert len(seen.images) == n_img > 10
    bad = [i for i in seen.images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not bad, bad
    assert "Conservation laws per kind" in seen.text and seen.page_height > 3000
    if which == "contract":
        assert "Verdicts" in seen.text


def test_panels_follow_the_kinds_present(tmp_path):
    """A run with only scale groups gets a one-column Figure 5 (narrower image)."""
    import matplotlib.image as mpimg
    import torch.nn.functional as F

    from symmetry_engine.numeric.tracker import Tracker

    from .test_tracker import batches, make_model

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
    one = mpimg.imread(tmp_path / "out" / "conservation.png")
    assert list(ev.series) == ["scale"] and one.shape[1] < 700  # 1 column ≈ 550 px wide, 3 ≈ 1650
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No checkpoints" in text and "minibatch loss was not recorded" in text
    assert "recorded by the tracker at every step (samples.bin, 6 steps)" in text   # Figure 1 from the sample
    # without the per-step sample (samples=0) and without checkpoints, Figure 1 says why it has no top row
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = Tracker(model, opt, tmp_path / "r0", syms, samples=0)
    for xb, yb in batches(5):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    tr.close()
    write_report(evaluate_run(tmp_path / "r0"), tmp_path / "out0")
    text = (tmp_path / "out0" / "report.md").read_text()
    assert "Individual entries need a per-step sample" in text and "this run has neither" in text


def test_layer_and_group_choice():
    syms = toy_symmetries()
    trans = [s for s in syms if s.kind == "translation"]
    assert pick_layer("translation", trans) == "fc"  # weight columns of the final linear layer
    resc = [s for s in syms if s.kind == "rescale"]
    assert pick_layer("rescale", resc) == "bn"  # most groups (4 vs 3)
    assert pick_layer("rescale", resc, exclude={f"rescale:bn[{c}]" for c in range(2)}) == "conv2"

    class S:
        symmetries = trans
    assert pick_groups(S, "fc", 4) == [0, 16, 31, 47]
    assert pick_groups(S, "fc.bias", 4) == [48]
    assert pick_groups(S, "fc", 2, exclude={"translation:fc[0]"}) == [1, 47]


def test_markdown_reports_warnings_and_missing_predictions(tmp_path):
    syms = [Symmetry("scale", (Member("conv1.weight", 0, (0,)),), "conv1", 0)]
    layout = RecordLayout(("scale",), ((0,),), 1, identity=True)
    classes = [OptimizerClass(0, 0, True, True, True, "adam", params=("conv1.weight",))]
    w = RunWriter(tmp_path / "r", {"optimizer": {"rule": "adam", "lr": 1e-3}}, syms, layout=layout, classes=classes)
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
    assert "not written by `nmech train`" in text
    with pytest.raises(Exception):
        write_report(ev, tmp_path / "r" / "run.json" / "x")  # not a directory


def test_cli_report_run_and_bad_targets(toy, tmp_path, capsys):
    from analyses.cli import main

    d, ev = toy
    assert main(["report", str(ev.run_dir), "--out", str(tmp_path / "rep"), "--layer", "conv2", "--channels", "2"]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'rep' / 'report.md'}" in out and f"html report: {tmp_path / 'rep' / 'report.html'}" in out
    assert "`conv2`, 2 groups" in (tmp_path / "rep" / "report.md").read_text()
    (tmp_path / "empty").mkdir()
    for args, msg in (([str(tmp_path / "nope" / "run")], "no such run directory"),
                      ([str(tmp_path / "empty")], "without run.json"),
                      ([str(ev.run_dir), str(tmp_path / "empty")], "is not a run directory"),
                      ([str(ev.run_dir), "--channels", "0"], "--channels: must be an integer ≥ 1")):
        try:
            rc = main(["report", *args])
        except SystemExit as exc:  # argparse refuses a value outside its domain at parse time
            rc = exc.code
        assert rc == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_network_order_beats_name_order(toy):
    from analyses.figures import network_order, order_layers

    _, ev = toy
    params = network_order(ev.run_dir)
    assert params[:3] == ["conv1.weight", "conv1.bias", "bn.weight"]   # the toy's state_dict order
    assert order_layers(["fc", "conv2", "bn", "conv1"], params) == ["conv1", "bn", "conv2", "fc"]
    assert order_layers(["features.10", "classifier.0", "features.3"]) == ["classifier.0", "features.3", "features.10"]
    vgg = ["features.0.weight", "features.3.weight", "features.10.weight", "classifier.0.weight", "classifier.2.weight"]
    syms = [Symmetry("rescale", (Member(f"{l}.weight", 0, (c,)),), l, c)
            for l in ("classifier.0", "classifier.2", "features.3", "features.10") for c in range(4)]
    assert pick_layer("rescale", syms, params=vgg) == "features.10"   # the middle of the tied layers, by depth
    assert pick_layer("rescale", syms) == "classifier.2"                # without the order: middle in natural order
