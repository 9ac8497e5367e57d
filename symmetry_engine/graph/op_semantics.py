"""The one table of op semantics the symmetry passes read.

Each op the analyzer understands has a *role* (how entries flow through it) and two properties:
``homogeneous`` — f(αx) = αf(x) for α > 0 in its data input, so a scaling passes through; and
``linear`` — f(x + δ) = f(x) + f(δ) (up to a constant), so a translation passes through as a moved
shift. Which tensor axes an op touches is not in the table: the axis flow (axes.py) runs movement ops on
label grids, and the passes read the axes a reduction, pooling or normalizer acts on from its arguments.
An op missing from the table blocks every symmetry through the tensors it reads (fail closed) and is
named in the analysis; an op whose inputs carry no moving entries is harmless whatever it is.

Roles:
  movement     moves entries (permute, cat, slice, pad, …; see axes.MOVEMENT)
  flatten      view / reshape / flatten: movement ops under the name the GL pass (matrix.py) reads
  unary        elementwise, one data input (arg 0): identity ops (axes.IDENTITY), ReLU family, neg, dropout
  block        elementwise but not positively homogeneous (tanh, GELU, exp, pow, …)
  softmax      softmax / log-softmax over ``dim``: absorbs shifts constant along it
  reduce       mean / sum / amax / amin / max / min over ``dim``
  pool         pooling over the trailing 1, 2 or 3 axes (``pool_axes``)
  affine       Linear / convolution: data arg 0, weight arg 1, bias arg 2
  addmm        bias + x @ W (GPT-2's Conv1D)
  embedding    rows of a weight selected by integer ids
  matmul       product of two tensors (attention logits and values, or a weight)
  sdpa         scaled_dot_product_attention(q, k, v, …)
  einsum       a two-operand einsum (MaxViT's relative attention)
  add, sub, mul, div, where, masked_fill   elementwise with two operands
  batch_norm, layer_norm, group_norm, instance_norm, rms_norm, native_group_norm   normalizers
  getitem      one output of a multi-output op
  source       creates values that do not depend on parameters (arange, zeros, bernoulli, …)
  compare      comparisons and boolean logic: masks
  ignore       side effects on buffers and assertions: not on the data path
"""

from __future__ import annotations

from dataclasses import dataclass

from .axes import IDENTITY, MOVEMENT

RESHAPES = frozenset({"aten.flatten", "aten.view", "aten.reshape", "aten._unsafe_view"})


@dataclass(frozen=True)
class OpSemantics:
    role: str
    homogeneous: bool = False
    linear: bool = False
    note: str = ""
    pool_axes: int = 0

    @property
    def shift_equivariant(self) -> bool:
        """Kept for callers of the old table: a shift passes through unchanged."""
        return self.linear


def _entries() -> dict[str, OpSemantics]:
    t: dict[str, OpSemantics] = {}

    def put(names: str, sem: OpSemantics) -> None:
        for n in names.split():
            t[n] = sem

    put(" ".join(sorted(MOVEMENT - IDENTITY - RESHAPES)), OpSemantics("movement", True, True, "moves entries: labels follow"))
    put(" ".join(sorted(RESHAPES)), OpSemantics("flatten", True, True, "reshape: a movement op (labels follow)"))
    put(" ".join(sorted(IDENTITY)), OpSemantics("unary", True, True, "identity on values"))
    put("aten.relu aten.leaky_relu aten.prelu aten.rrelu",
        OpSemantics("unary", True, False, "positively homogeneous activation"))
    put("aten.neg", OpSemantics("unary", True, True, "negation is linear"))
    put("aten.dropout aten.feature_dropout aten.alpha_dropout aten.native_dropout",
        OpSemantics("unary", True, False, "train-mode dropout: a parameter-free mask times a constant"))
    for k in (1, 2, 3):
        put(f"aten.max_pool{k}d aten.max_pool{k}d_with_indices aten.adaptive_max_pool{k}d",
            OpSemantics("pool", True, False, "max over a window: homogeneous; passes window-constant shifts", k))
        put(f"aten.avg_pool{k}d aten.adaptive_avg_pool{k}d",
            OpSemantics("pool", True, True, "average over a window: linear", k))
    put("aten.mean aten.sum", OpSemantics("reduce", True, True, "linear reduction over dim"))
    put("aten.amax aten.amin aten.max aten.min", OpSemantics("reduce", True, False, "max/min over dim"))
    put("aten.linalg_vector_norm aten.norm", OpSemantics("reduce", True, False, "a p-norm over dim: homogeneous, not shift-equivariant"))
    put("aten.clamp_min", OpSemantics("unary", True, False, "F.normalize's floor (≤ 1e-6, checked): exact wherever the value exceeds it"))
    put("aten.linear aten.conv1d aten.conv2d aten.conv3d aten.convolution aten.conv_transpose1d "
        "aten.conv_transpose2d aten.conv_transpose3d",
        OpSemantics("affine", False, False, "parameterised layer: produces and consumes features"))
    put("aten.addmm", OpSemantics("addmm", False, False, "bias + x @ W (weight [in, out])"))
    put("aten.embedding", OpSemantics("embedding", False, False, "weight rows picked by integer ids"))
    put("aten.matmul aten.bmm aten.mm", OpSemantics("matmul", False, False, "product: a weight, or bilinear"))
    put("aten.scaled_dot_product_attention", OpSemantics("sdpa", False, False, "softmax(q kᵀ) v"))
    put("aten.einsum", OpSemantics("einsum", False, False, "two-operand contraction: bilinear, or linear in one"))
    put("aten.batch_norm aten._native_batch_norm_legit_functional aten._native_batch_norm_legit "
        "aten.native_batch_norm aten._native_batch_norm_legit_no_training",
        OpSemantics("batch_norm", False, False, "per-channel normalization over batch and space (train mode)"))
    put("aten.layer_norm aten.native_layer_norm", OpSemantics("layer_norm", False, False, "normalization over trailing axes"))
    put("aten.rms_norm", OpSemantics("rms_norm", False, False, "RMS normalization over trailing axes (no centring)"))
    put("aten.group_norm", OpSemantics("group_norm", False, False, "normalization per channel group"))
    put("aten.native_group_norm", OpSemantics("native_group_norm", False, False, "normalization per channel group"))
    put("aten.instance_norm", OpSemantics("instance_norm", False, False, "per-sample, per-channel normalization"))
    put("aten.add", OpSemantics("add", True, True, "sum: both operands must scale together"))
    put("aten.sub aten.rsub", OpSemantics("sub", True, True, "difference: both operands must scale together"))
    put("aten.mul", OpSemantics("mul", True, False, "product: a mask, a parameter, or bilinear"))
    put("aten.div", OpSemantics("div", True, False, "quotient by a mask, a parameter or a constant"))
    put("aten.where", OpSemantics("where", True, False, "entrywise choice by a mask"))
    put("aten.masked_fill", OpSemantics("masked_fill", True, False, "entries replaced by a constant"))
    put("aten.softmax aten._softmax aten.log_softmax aten._log_softmax",
        OpSemantics("softmax", False, False, "absorbs shifts constant along dim"))
    put("getitem", OpSemantics("getitem", True, True, "element of a tuple output"))
    put("aten.arange aten.zeros aten.ones aten.full aten.empty aten.rand aten.randn aten.randint aten.bernoulli "
        "aten.zeros_like aten.ones_like aten.empty_like aten.full_like aten.rand_like aten.randn_like "
        "aten.scalar_tensor aten.tensor aten.new_zeros aten.new_ones aten.new_empty aten.new_full aten.tril aten.triu "
        "aten.cos aten.sin", OpSemantics("source", False, False, "values that no parameter moves (when its inputs do not)"))
    put("aten.le aten.ge aten.lt aten.gt aten.eq aten.ne aten.logical_and aten.logical_or aten.logical_not "
        "aten.bitwise_and aten.bitwise_or aten.bitwise_not aten.isinf aten.isnan",
        OpSemantics("compare", False, False, "comparison: a boolean mask"))
    put("aten.add_ aten.copy_ aten._assert_tensor_metadata aten._assert_async aten.sym_constrain_range "
        "aten.sym_constrain_range_for_size aten._assert_scalar aten.sym_size",
        OpSemantics("ignore"))
    put("aten.tanh aten.sigmoid aten.gelu aten.silu aten.elu aten.selu aten.celu aten.softplus aten.mish aten.hardtanh "
        "aten.hardswish aten.hardsigmoid aten.relu6 aten.log_sigmoid aten.exp aten.log aten.pow aten.sqrt aten.rsqrt "
        "aten.abs aten.reciprocal aten.erf aten.square aten.clamp aten.clamp_max aten.sign "
        "aten.logsumexp aten.var aten.std aten.var_mean aten.cumsum aten.sort aten.topk aten.argmax aten.argmin",
        OpSemantics("block", False, False, "not positively homogeneous"))
    return t


OP_TABLE: dict[str, OpSemantics] = _entries()
UNKNOWN = OpSemantics("unknown", False, False, "op missing from the semantics table: blocks")


def semantics(name: str) -> OpSemantics:
    """Semantics of a canonical op name; unknown ops block (never 'probably fine')."""
    return OP_TABLE.get(name, UNKNOWN)
