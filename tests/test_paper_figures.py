"""Figures 3 and 4: files are written, axes are labelled, plotted iterates are the optimizers' iterates, and
the modified dynamics beat gradient flow in both panels."""

import matplotlib.pyplot as plt
import numpy as np

from analyses.figures import lines_by_gid
from analyses.paper_figures import A_MATRIX, W0, figure3, figure3_fig, figure4, figure4_fig


def test_figure3_writes_png_with_labelled_axes(tmp_path):
    out = tmp_path / "fig3.png"
    figure3(out)
    assert out.stat().st_size > 10_000
    fig = figure3_fig()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_xlabel() for ax in panels] == [r"$\theta_1$", r"$\theta_1$", r"$\theta_{A_1}$"]
    assert all(ax.get_ylabel() for ax in panels) and len(fig.axes) == 6   # 3 panels + 3 colour bars (value c)
    plt.close(fig)


def test_figure4_modified_closer_than_flow_and_iterates_plotted(tmp_path):
    out = tmp_path / "fig4.png"
    res = figure4(out)
    assert out.stat().st_size > 10_000
    assert res["gd_modified"] < 0.5 * res["gd_gradient_flow"]
    assert res["momentum_modified"] < 0.5 * res["momentum_gradient_flow"]
    fig, _ = figure4_fig()
    lines = lines_by_gid(fig)
    w, gd = W0.copy(), [W0.copy()]
    for _ in range(20):
        w = w - 0.1 * A_MATRIX @ w
        gd.append(w)
    gd = np.array(gd)
    assert np.allclose(lines["gd|iterates"].get_xdata(), gd[:, 0], rtol=1e-14)
    assert np.allclose(lines["gd|iterates"].get_ydata(), gd[:, 1], rtol=1e-14)
    assert len(lines["momentum|iterates"].get_xdata()) == 51
    for ax in fig.axes[:2]:
        assert ax.get_xlabel() == "$w_1$" and ax.get_ylabel() == "$w_2$"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(t.startswith("level sets of L(w)") for t in labels)   # the grey lines are explained
    plt.close(fig)
