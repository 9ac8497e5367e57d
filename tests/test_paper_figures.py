"""Figures 3 and 4: files are written and the modified dynamics beat gradient flow in both panels."""

from analyses.paper_figures import figure3, figure4


def test_figure3_writes_png(tmp_path):
    out = tmp_path / "fig3.png"
    figure3(out)
    assert out.stat().st_size > 10_000


def test_figure4_modified_closer_than_flow(tmp_path):
    out = tmp_path / "fig4.png"
    res = figure4(out)
    assert out.stat().st_size > 10_000
    assert res["gd_modified"] < 0.5 * res["gd_gradient_flow"]
    assert res["momentum_modified"] < 0.5 * res["momentum_gradient_flow"]
