"""The one table of op semantics the symmetry passes read.

Each op the analyzer understands has a *role* (how channels flow through it) and two properties:
``homogeneous`` — f(αx) = αf(x) for α > 0 in its data input, so a channel scaling passes through; and
``shift_equivariant`` — f(x + c) = f(x) + c for a per-channel constant c, so a bias translation passes
through on its way to a normalizer. An op missing from the table blocks every symmetry through it
(fail closed) and is named in the analysis.

Roles:
  unary       elementwise, one data input (arg 0), output keeps the layout
  pool        spatial pooling over the trailing axes, channel axis kept
  affine      linear / convolution: data arg 0, weight arg 1, bias arg 2
  batch_norm, layer_norm, group_norm, instance_norm   normalizers (see detect.py for their arguments)
  add, sub    elementwise sum of two tensors (residual connections)
  mul         product with a constant scalar (homogeneous); two tensors block
  cat         concatenation along an axis
  flatten     flatten / view / reshape: channel axis → blocks of features
  getitem     select one output of a multi-output op (max_pool2d_with_indices)
  mean        mean over spatial axes (global average pooling)
  ignore      side effects on buffers (BN's num_batches_tracked += 1): not on the data path
  block       known op that breaks scaling (non-homogeneous activations, softmax, matmul of activations)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpSemantics:
    role: str
    homogeneous: bool = False
    shift_equivariant: bool = False
    note: str = ""


def _entries() -> dict[str, OpSemantics]:
    t: dict[str, OpSemantics] = {}

    def put(names: str, sem: OpSemantics) -> None:
        for n in names.split():
            t[n] = sem

    put("aten.relu aten.leaky_relu aten.prelu aten.rrelu", OpSemantics("unary", True, False, "positively homogeneous activation"))
    put("aten.dropout aten.feature_dropout aten.alpha_dropout aten.native_dropout",
        OpSemantics("unary", True, False, "train-mode dropout: a fixed mask times a constant"))
    put("aten.clone aten.contiguous aten.alias aten.detach aten.lift_fresh_copy aten.identity aten._to_copy aten.to",
        OpSemantics("unary", True, True, "identity on values"))
    put("aten.max_pool1d aten.max_pool2d aten.max_pool3d aten.max_pool2d_with_indices aten.adaptive_max_pool2d",
        OpSemantics("pool", True, True, "max commutes with positive scaling and constant shifts"))
    put("aten.avg_pool1d aten.avg_pool2d aten.avg_pool3d aten.adaptive_avg_pool1d aten.adaptive_avg_pool2d aten.adaptive_avg_pool3d",
        OpSemantics("pool", True, True, "averaging is linear; shift-equivariant without zero padding (checked)"))
    put("aten.mean", OpSemantics("mean", True, True, "mean over spatial axes"))
    put("aten.linear aten.conv1d aten.conv2d aten.conv3d aten.convolution",
        OpSemantics("affine", False, False, "parameterised layer: produces and consumes channels"))
    put("aten.batch_norm aten._native_batch_norm_legit_functional aten._native_batch_norm_legit aten.native_batch_norm",
        OpSemantics("batch_norm", False, False, "per-channel normalization over batch and space (train mode)"))
    put("aten.layer_norm aten.native_layer_norm", OpSemantics("layer_norm", False, False, "normalization over trailing axes"))
    put("aten.group_norm aten.native_group_norm", OpSemantics("group_norm", False, False, "normalization per channel group"))
    put("aten.instance_norm", OpSemantics("instance_norm", False, False, "per-sample, per-channel normalization"))
    put("aten.add", OpSemantics("add", True, False, "sum of two tensors: both must scale together"))
    put("aten.sub", OpSemantics("sub", True, False, "difference of two tensors: both must scale together"))
    put("aten.mul aten.div", OpSemantics("mul", True, False, "product with a constant scalar"))
    put("aten.cat aten.concat aten.concatenate", OpSemantics("cat", True, True, "concatenation"))
    put("aten.flatten aten.view aten.reshape aten._unsafe_view", OpSemantics("flatten", True, True, "reshape: checked to map channels to blocks"))
    put("getitem", OpSemantics("getitem", True, True, "element of a tuple output"))
    put("aten.add_ aten.copy_", OpSemantics("ignore"))
    put("aten.tanh aten.sigmoid aten.gelu aten.silu aten.elu aten.selu aten.celu aten.softplus aten.mish aten.hardtanh "
        "aten.hardswish aten.hardsigmoid aten.relu6 aten.log_sigmoid aten.exp aten.log aten.pow aten.sqrt aten.abs",
        OpSemantics("block", False, False, "not positively homogeneous"))
    put("aten.softmax aten._softmax aten.log_softmax aten._log_softmax aten.matmul aten.bmm aten.mm aten.baddbmm "
        "aten.addmm aten.scaled_dot_product_attention aten.permute aten.transpose aten.t aten.expand aten.slice "
        "aten.select aten.unsqueeze aten.squeeze aten.pixel_shuffle aten.channel_shuffle aten.roll aten.index",
        OpSemantics("block", False, False, "channel flow not modelled: blocks (fail closed)"))
    return t


OP_TABLE: dict[str, OpSemantics] = _entries()
UNKNOWN = OpSemantics("unknown", False, False, "op missing from the semantics table: blocks")


def semantics(name: str) -> OpSemantics:
    """Semantics of a canonical op name; unknown ops block (never 'probably fine')."""
    return OP_TABLE.get(name, UNKNOWN)
