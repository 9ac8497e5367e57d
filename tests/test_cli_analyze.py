"""`nmech analyze` as outside programs use it: JSON actions applied with plain numpy leave the loss unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

NMECH = [sys.executable, "-m", "analyses.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NMECH, *args], capture_output=True, text=True, timeout=300)


def _mlp_loss(state: dict, x: np.ndarray, y: np.ndarray) -> float:
    """Forward of model_zoo's `mlp` written in numpy from the JSON's parameter names (Linear → ReLU ...)."""
    layers = sorted({k.rsplit(".", 1)[0] for k in state}, key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    h = x
    for i, name in enumerate(layers):
        h = h @ state[name + ".weight"].T + state[name + ".bias"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    z = h - h.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def test_json_actions_apply_without_the_package() -> None:

    from model_zoo import build_model

    out = run("analyze", "mlp", "--input-shape", "12", "--num-classes", "5", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    model, _ = build_model("mlp", num_classes=5, input_shape=(12,))
    state = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    assert {k: list(v.shape) for k, v in state.items()} == data["parameters"]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 12)), rng.integers(0, 5, 16)
    base = _mlp_loss(state, x, y)
    assert data["counts"]["translation"] > 0 and data["counts"]["rescale"] > 0
    for sym in data["symmetries"]:
        alpha = rng.uniform(0.5, 2.0)
        new = {k: v.copy() for k, v in state.items()}
        for m in sym["members"]:
            t = new[m["param"]]
            sel = (Ellipsis,) if m["axis"] is None else tuple(m["indices"] if a == m["axis"] else slice(None) for a in range(t.ndim))
            if sym["kind"] == "translation":
                t[sel] += alpha * m["sign"]
            else:
                t[sel] *= alpha ** m["sign"]
        assert abs(_mlp_loss(new, x, y) - base) <= 1e-10 * abs(base)


@pytest.mark.parametrize("args,needle", [
    (("analyze", "not_a_model"), "unknown model spec"),
    (("analyze", "vgg16", "--input-shape", "3,7,7", "--width", "0.0625"), "input_size must be"),
    (("analyze", "torchvision:resnet18", "--input-shape", "5,32,32"), "does not accept an input of shape"),
    (("analyze", "mlp", "--input-shape", "x"), "input shape"),
    (("analyze", "mlp", "--loss", "hinge"), "invalid choice"),
    (("laws", "--kinds", "spin", "mlp"), "unknown symmetry kind"),
    (("laws", "torchvision:resnet18", "--input-shape", "5,32,32", "--no-cache"), "does not accept an input of shape"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(args, needle) -> None:
    out = run(*args)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], out.stderr


def test_certify_reports_all_certified_for_vgg16_bn() -> None:
    out = run("analyze", "vgg16_bn", "--width", "0.0625", "--certify", "--certify-batch", "4")
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("certified:")][0]
    done, total = line.split()[1].split("/")
    assert done == total and int(total) > 0


def test_analysis_cache_returns_the_same_analysis_and_survives_corruption(tmp_path, monkeypatch) -> None:
    from analyses import analysis_cache

    monkeypatch.setenv("NMECH_CACHE_DIR", str(tmp_path))
    first = run("analyze", "mlp", "--input-shape", "9", "--json", "--compact")
    files = list(tmp_path.glob("analysis-*.json"))
    assert first.returncode == 0 and len(files) == 1
    second = run("analyze", "mlp", "--input-shape", "9", "--json", "--compact")
    assert json.loads(second.stdout) == json.loads(first.stdout)
    files[0].write_text("{truncated")
    third = run("analyze", "mlp", "--input-shape", "9", "--json", "--compact")
    assert third.returncode == 0 and json.loads(third.stdout) == json.loads(first.stdout)
    # different options, different key; user factories are never cached
    assert analysis_cache.cache_key("mlp", {"a": 1}) != analysis_cache.cache_key("mlp", {"a": 2})
    assert analysis_cache.cache_key("mypkg.models:make", {}) is None


def test_laws_for_a_model_lists_only_its_kinds() -> None:
    out = run("laws", "vgg16", "--width", "0.0625", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    text = json.dumps(data)
    assert "rescale" in text and "translation" in text and '"scale"' not in text


def test_token_model_from_the_command_line() -> None:
    """A language model: int64 ids (declared by the hf_* spec), [B, S, V] logits under cross-entropy."""
    pytest.importorskip("transformers")
    out = run("analyze", "hf_gpt2", "--json", "--no-cache")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["counts"]["rescale"] > 0 and data["counts"]["translation"] > 0
    assert data["model"]["input_shape"] == [8]


@pytest.mark.parametrize("args,needle", [
    (("mlp", "--input-shape", "5", "--input-dtype", "int64"), "--input-max"),
    (("mlp", "--input-shape", "5", "--output", "aux"), "--output 'aux' names none"),
])
def test_input_dtype_and_output_errors_are_one_line(args, needle) -> None:
    out = run("analyze", *args, "--no-cache")
    assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
