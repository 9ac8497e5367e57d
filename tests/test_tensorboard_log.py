"""TensorBoard writer: the numbers read back from the event files are the numbers written."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="optional extra: pip install 'neural-mechanics[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from analyses.tensorboard_log import TensorBoardLog, evaluation_scalars, layer_scalars, write_evaluation  # noqa: E402


def read_back(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_synthetic_scalars_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    layers = ["features.0"] * 3 + ["features.10"] * 2
    written = {}
    with TensorBoardLog(tmp_path / "tb") as tb:
        for step in range(7):
            m, norm = rng.normal(size=5), 1 + rng.random(5)
            law, cont, brk = m + 1e-6 * rng.normal(size=5), m + 1e-3 * rng.normal(size=5), rng.random(5) * 1e-8
            s = layer_scalars("scale", layers, m, norm, law, cont, brk)
            s["train/loss"] = float(rng.random())
            s["train/nan"] = float("nan")   # skipped, never written
            assert tb.write(step, s) == len(s) - 1
            written[step] = s
            if step == 0:  # the per-layer reductions, by hand
                j = [3, 4]
                assert s["scale/features.10/quantity"] == pytest.approx(m[j].sum(), rel=1e-15)
                assert s["scale/features.10/law_error"] == pytest.approx(np.max(np.abs(m[j] - law[j]) / norm[j]), rel=1e-15)
                assert s["scale/features.0/breaking"] == pytest.approx(brk[:3].max(), rel=1e-15)
    back = read_back(tmp_path / "tb")
    assert set(back) == set(written[0]) - {"train/nan"}
    for tag, events in back.items():
        assert [e[0] for e in events] == list(range(7))
        for step, value in events:   # TensorBoard keeps float32
            assert value == np.float32(written[step][tag]), (tag, step)


def test_evaluation_export_matches_the_series(tmp_path):
    from symmetry_engine.numeric.evaluate import evaluate_run

    from .report_fixtures import toy_run

    toy_run(tmp_path / "r", steps=12, every=6, eval_log=False)
    ev = evaluate_run(tmp_path / "r")
    n = write_evaluation(ev, tmp_path / "tb")
    back = read_back(tmp_path / "tb")
    ser = ev.series["rescale"]
    j = [i for i, s in enumerate(ser.symmetries) if s.layer == "conv2"]
    q = dict(back["rescale/conv2/quantity"])
    assert sorted(q) == list(range(13))
    for step in (0, 5, 12):
        assert q[step] == np.float32(ser.measured[step, j].sum())
    assert dict(back["train/lr"])[3] == np.float32(ev.lrs[3])
    assert n == sum(len(v) for v in back.values())
    assert next(evaluation_scalars(ev))[0] == 0
