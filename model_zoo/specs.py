"""Model-spec resolution: one function turns the strings users type into a module.

Accepted specs (design brief, "Model specs accepted everywhere a model is named"):

* a zoo name: ``vgg11`` … ``vgg19`` and their ``_bn`` variants, ``resnet18``, ``resnet34``, ``mlp``,
  ``convnet``, and the tiny Hugging Face transformers ``hf_bert``, ``hf_gpt2``, ``hf_llama``, ``hf_vit``
  (model_zoo/hf_tiny.py; built from configs, token models take int64 ids: ``ModelInfo.input_dtype``);
* ``torchvision:NAME`` — ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``; weights are
  never downloaded;
* ``package.module:callable`` — a zero-argument factory imported from ``PYTHONPATH``.

Every failure is a :class:`SpecError` with a one-line message (the CLI prints it without a traceback),
naming close matches when the name or a keyword looks like a typo.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .resnet import LAYERS as RESNET_LAYERS
from .resnet import build_resnet
from .small import ConvNet, build_mlp
from .vgg import CONFIGS as VGG_CONFIGS
from .vgg import build_vgg


class SpecError(ValueError):
    """A model spec or its keyword arguments cannot be resolved (message is one line)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs besides the module: a name, one sample's shape (C, H, W) and the class count.

    ``input_shape``/``num_classes`` are ``None`` for user factories that do not declare them.
    """

    name: str
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    spec: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_dtype: str = "float32"      # "int64" for token ids in [0, input_max)
    input_max: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        return d


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _close(word: str, options: Sequence[str]) -> str:
    hits = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(hits)}?)" if hits else ""


def _image_shape(input_shape: Sequence[int] | None, input_size: int | None, default: int) -> tuple[int, int, int]:
    if input_shape is None:
        s = default if input_size is None else int(input_size)
        return (3, s, s)
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise SpecError(f"this model needs a square image input shape C,H,W; got {','.join(map(str, shape))}")
    if input_size is not None and int(input_size) != shape[1]:
        raise SpecError(f"input_size={input_size} contradicts input shape {','.join(map(str, shape))}")
    return shape  # type: ignore[return-value]


def _vgg(name: str, num_classes: int, input_shape, width: float = 1.0, dropout: float = 0.0, bias: bool = True,
         input_size: int | None = None):
    shape = _image_shape(input_shape, input_size, 32)
    return build_vgg(name, num_classes=num_classes, input_size=shape[1], width=width, dropout=dropout, bias=bias,
                     in_channels=shape[0]), shape


def _resnet(name: str, num_classes: int, input_shape, width: float = 1.0, stem: str = "cifar",
            input_size: int | None = None):
    shape = _image_shape(input_shape, input_size, 32 if stem == "cifar" else 64)
    return build_resnet(name, num_classes=num_classes, width=width, stem=stem, in_channels=shape[0]), shape


def _mlp(name: str, num_classes: int, input_shape, widths: Sequence[int] | str = (256, 256),
         activation: str = "relu", bias: bool = True):
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else (3, 32, 32)
    return build_mlp(shape, num_classes=num_classes, widths=widths, activation=activation, bias=bias), shape


def _convnet(name: str, num_classes: int, input_shape, width: float = 1.0, batch_norm: bool = False,
             input_size: int | None = None):
    shape = _image_shape(input_shape, input_size, 32)
    return ConvNet(num_classes=num_classes, input_size=shape[1], in_channels=shape[0], width=width,
                   batch_norm=batch_norm), shape


def _seq(input_shape, seq: int | None) -> int:
    if input_shape is not None:
        if len(tuple(input_shape)) != 1:
            raise SpecError(f"token models take a sequence length as input shape (e.g. 8), got {input_shape}")
        return int(tuple(input_shape)[0])
    return 8 if seq is None else int(seq)


def _hf_bert(name: str, num_classes: int, input_shape, hidden: int = 16, layers: int = 2, heads: int = 2,
             vocab: int = 50, seq: int | None = None, attn: str = "eager"):
    from .hf_tiny import build_bert
    m = build_bert(hidden, layers, heads, vocab, _seq(input_shape, seq), num_classes, attn)
    return m, m.input_shape


def _hf_gpt2(name: str, num_classes: int, input_shape, hidden: int = 16, layers: int = 2, heads: int = 2,
             vocab: int = 50, seq: int | None = None, attn: str = "eager"):
    from .hf_tiny import build_gpt2
    m = build_gpt2(hidden, layers, heads, vocab, _seq(input_shape, seq), attn)
    return m, m.input_shape


def _hf_llama(name: str, num_classes: int, input_shape, hidden: int = 16, layers: int = 2, heads: int = 2,
              kv_heads: int | None = None, vocab: int = 50, seq: int | None = None, attn: str = "eager"):
    from .hf_tiny import build_llama
    m = build_llama(hidden, layers, heads, kv_heads, vocab, _seq(input_shape, seq), attn)
    return m, m.input_shape


def _hf_vit(name: str, num_classes: int, input_shape, hidden: int = 16, layers: int = 2, heads: int = 2,
            patch: int = 4, input_size: int | None = None, attn: str = "eager"):
    from .hf_tiny import build_vit
    shape = _image_shape(input_shape, input_size, 16)
    m = build_vit(shape[1], patch, hidden, layers, heads, num_classes, attn)
    return m, m.input_shape


ZOO: dict[str, Callable[..., tuple[nn.Module, tuple[int, ...]]]] = {}
for _n in VGG_CONFIGS:
    ZOO[_n] = _vgg
    ZOO[_n + "_bn"] = _vgg
for _n in RESNET_LAYERS:
    ZOO[_n] = _resnet
ZOO["mlp"] = _mlp
ZOO["convnet"] = _convnet
ZOO["hf_bert"] = _hf_bert
ZOO["hf_gpt2"] = _hf_gpt2
ZOO["hf_llama"] = _hf_llama
ZOO["hf_vit"] = _hf_vit


def zoo_names() -> list[str]:
    return sorted(ZOO)


def _check_kwargs(spec: str, fn: Callable, kwargs: dict[str, Any]) -> None:
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("name", "num_classes", "input_shape")]
    for k in kwargs:
        if k not in allowed:
            raise SpecError(f"{spec} takes no option {k!r}{_close(k, allowed)}; options: {', '.join(allowed)}")


def _torchvision(name: str, num_classes: int, input_shape, kwargs: dict[str, Any]) -> tuple[nn.Module, tuple[int, ...]]:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        raise SpecError(f"unknown torchvision model {name!r}{_close(name, names)}")
    if kwargs.get("weights") not in (None, "none", "None"):
        raise SpecError("torchvision models are built with weights=None (nothing is downloaded)")
    kw = {k: v for k, v in kwargs.items() if k != "weights"}
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"torchvision:{name}: {_one_line(exc)}") from None
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else (3, 224, 224)
    return model, shape


def _factory(spec: str, input_shape, kwargs: dict[str, Any]) -> tuple[nn.Module, tuple[int, ...] | None]:
    mod_name, _, attr = spec.partition(":")
    if kwargs:
        raise SpecError(f"{spec} is a zero-argument factory; it takes no options (got {', '.join(kwargs)})")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SpecError(f"cannot import module {mod_name!r} for spec {spec!r} (is it on PYTHONPATH?): {_one_line(exc)}") from None
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise SpecError(f"module {mod_name!r} has no attribute {attr!r}{_close(attr, public)}")
    fn = getattr(module, attr)
    try:
        model = fn()
    except Exception as exc:  # a user factory can fail in any way; report it in one line
        raise SpecError(f"factory {spec} failed: {type(exc).__name__}: {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"factory {spec} returned {type(model).__name__}, not an nn.Module")
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", getattr(fn, "input_shape", None))
    return model, (tuple(int(v) for v in shape) if shape is not None else None)


def build_model(spec: str, num_classes: int = 10, input_shape: Sequence[int] | None = None,
                **kwargs: Any) -> tuple[nn.Module, ModelInfo]:
    """Resolve ``spec`` to ``(module, ModelInfo)``; ``input_shape`` is one sample (C, H, W) or (D,)."""
    spec = spec.strip()
    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        model, shape = _torchvision(name, num_classes, input_shape, kwargs)
        return model, ModelInfo(spec, shape, num_classes, spec, dict(kwargs))
    if ":" in spec:
        model, shape = _factory(spec, input_shape, kwargs)
        return model, ModelInfo(spec, shape, getattr(model, "num_classes", None), spec, {})
    key = spec.lower().replace("-", "_")
    if key not in ZOO:
        raise SpecError(f"unknown model spec {spec!r}{_close(key, zoo_names())}; use a zoo name "
                        f"({', '.join(zoo_names())}), torchvision:NAME or package.module:callable")
    fn = ZOO[key]
    _check_kwargs(spec, fn, kwargs)
    try:
        model, shape = fn(key, int(num_classes), input_shape, **kwargs)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{spec}: {_one_line(exc)}") from None
    if getattr(model, "input_dtype", None) == torch.int64:
        return model, ModelInfo(key, tuple(shape), int(model.num_classes), spec, dict(kwargs), "int64",
                                int(model.vocab_size))
    return model, ModelInfo(key, tuple(shape), int(num_classes), spec, dict(kwargs))
