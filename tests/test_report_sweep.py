"""Sweep reports: runs side by side, labelled by the hyperparameter that differs, figures checked by numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analyses.figures import lines_by_gid
from analyses.report import evaluation_json
from analyses.run_info import differing, run_label
from analyses.sweep import common_group, sweep_figure, sweep_labels
from symmetry_engine.numeric.evaluate import evaluate_run

from .chromium import HOW_TO_GET, check_page, find_chromium
from .test_evaluate import run_with_checkpoints
from .test_tracker import MOMENTUM

DECAYS = (0.0, 5e-3, 2e-2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    dirs = []
    for wd in DECAYS:
        run_with_checkpoints(d / f"wd{wd:g}", {**MOMENTUM, "weight_decay": wd}, 20, every=10)
        dirs.append(d / f"wd{wd:g}")
    return d, [evaluate_run(p) for p in dirs]


def test_labels_name_the_differing_hyperparameter(sweep):
    _, evs = sweep
    datas = [evaluation_json(ev) for ev in evs]
    keys, labels = sweep_labels(datas, [ev.run_dir.name for ev in evs])
    assert keys == ["weight_decay"] and labels == ["λ = 0", "λ = 5e-3", "λ = 0.02"]
    same = sweep_labels([datas[0], datas[0]], ["a", "b"])
    assert same == ([], ["a", "b"])
    assert differing([{"train": {"seed": 1, "out": "x"}}, {"train": {"seed": 2, "out": "y"}}]) == ["seed"]
    assert run_label({"train": {"batch_size": 128}}, ["batch_size"], "x") == "B = 128"


def test_sweep_figure_plots_each_runs_series(sweep):
    _, evs = sweep
    datas = [evaluation_json(ev) for ev in evs]
    fig, shown = sweep_figure(evs, datas, ["a", "b", "c"], layers=["conv2"])
    assert set(shown) == {"translation", "scale", "rescale"} and shown["rescale"].startswith("rescale:conv2[")
    lines = lines_by_gid(fig)
    for kind, key in shown.items():
        for r, ev in enumerate(evs):
            ser = ev.series[kind]
            j = [s.key for s in ser.symmetries].index(key)
            assert np.array_equal(lines[f"sweep|{kind}|measured|{r}"].get_ydata(), ser.measured[:, j])
            assert np.array_equal(lines[f"sweep|{kind}|continuous|{r}"].get_ydata(), ser.continuous[:, j])
            y = np.asarray(lines[f"sweep|{kind}|residual-continuous|{r}"].get_ydata(), float)
            want = np.abs(ser.measured[:, j] - ser.continuous[:, j]) / ser.norm[j]
            ok = np.isfinite(y)
            assert np.allclose(y[ok], want[ok], rtol=1e-12) and np.all(want[~ok] == 0)
    # the runs part as λ grows: the final scale quantity differs between λ = 0 and λ = 2e-2
    j = [s.key for s in evs[0].series["scale"].symmetries].index(shown["scale"])
    assert abs(evs[0].series["scale"].measured[-1, j] - evs[2].series["scale"].measured[-1, j]) > 1e-4
    # a degenerate group is never the one followed
    data0 = dict(datas[0], groups=[dict(g, verdict="degenerate") if g["key"] == shown["rescale"] else g
                                   for g in datas[0]["groups"]])
    assert common_group(evs, [data0, *datas[1:]], "rescale", ["conv2"]) != shown["rescale"]


def test_cli_sweep_report(sweep, tmp_path, capsys):
    from analyses.cli import main

    _, evs = sweep
    assert main(["report", *[str(ev.run_dir) for ev in evs], "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert f"html report: {tmp_path / 's' / 'report.html'}" in out
    text = (tmp_path / "s" / "report.md").read_text()
    assert "What differs between them: `weight_decay`" in text and "| λ = 0.02 |" in text
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    assert data["differing"] == ["weight_decay"] and [r["label"] for r in data["runs"]] == ["λ = 0", "λ = 5e-3", "λ = 0.02"]
    assert data["figures"] == ["sweep.png"]
    binary = find_chromium()
    if binary is None:
        pytest.skip(HOW_TO_GET)
    seen = check_page(tmp_path / "s" / "report.html", binary)
    assert not seen.console_errors and all(i["complete"] and i["width"] > 0 for i in seen.images)
    assert len(seen.images) == 1
