"""Analyze a Hugging Face model built from a config (no download): its symmetries and their laws.

A small Vision Transformer (ViT) is built from ``transformers.ViTConfig`` with random weights — nothing is
fetched from the hub — wrapped so that it returns the logits, analyzed, and reported as an architecture
report (per-layer symmetries, the reasons where there are none, the laws under SGD with momentum).

    pip install 'neural-mechanics[huggingface]'
    python examples/analyze_huggingface.py --out runs/example-vit

Use any other config the same way (``BertConfig`` + ``BertForSequenceClassification`` with integer token
inputs, ``GPT2Config`` + ``GPT2LMHeadModel``, ...): build from the config, never ``from_pretrained``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import symmetry_engine as nm
from analyses.report import write_architecture_report


class Logits(nn.Module):
    """Hugging Face models return an output object; the analyzer follows a tensor to the loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def build_vit(image_size: int, hidden: int, layers: int, heads: int, classes: int) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=image_size, patch_size=image_size // 4, num_channels=3, hidden_size=hidden,
                    num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                    num_labels=classes, hidden_act="relu")
    return Logits(ViTForImageClassification(cfg)).train()


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/example-vit")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = build_vit(args.image_size, args.hidden, args.layers, args.heads, args.classes)
    example = torch.randn(4, 3, args.image_size, args.image_size)
    result = nm.analyze(model, example)
    print("symmetries: " + ", ".join(f"{k} {n}" for k, n in result.counts.items())
          + (f", GL(r) {len(result.matrix_symmetries)}" if result.matrix_symmetries else ""))
    if result.unknown_ops:
        print("ops outside the semantics table (they block symmetries): " + ", ".join(result.unknown_ops))
    analysis = result.to_json()
    analysis["model"] = {"spec": f"transformers ViT (hidden {args.hidden}, {args.layers} layers, {args.heads} heads)",
                         "input_shape": list(example.shape[1:]), "num_classes": args.classes}
    optimizer = {"rule": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": False,
                 "weight_decay": 5e-4, "decoupled_weight_decay": False}
    report = write_architecture_report(analysis, optimizer, args.out)
    print(f"report: {report}")
    print(f"html report: {report.with_suffix('.html')}")
    return report


if __name__ == "__main__":
    main()
