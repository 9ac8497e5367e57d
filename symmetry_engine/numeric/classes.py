"""Member classes: the tracked parameters split by how the optimizer treats them (theory.md §7).

Why: a real optimizer gives the members of one symmetry group different hyper-parameters (no weight decay
on norms and biases, a smaller head lr, frozen layers, OneCycle's cycling momentum, a tracker attached
after the momentum buffers filled). Each class follows the exact recurrences of §5 with its own
coefficients; the symmetry constrains only the sum over classes. A class is fixed for the whole log: the
parameters of one optimizer param group that agree on whether they are trained (``requires_grad``) and
on whether they already had a momentum buffer when the log began. Per step the tracker reads every
class's hyper-parameters from its param group (so every ``torch.optim.lr_scheduler`` is covered without
special cases) and the fraction of its parameters that had a gradient (SGD skips the others entirely).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

#: Hyper-parameter columns recorded per class and step (``updated``: fraction of the class's parameters
#: that had a gradient, i.e. that the optimizer touched; 0 for a frozen class).
CLASS_COLUMNS = ("lr", "momentum", "dampening", "weight_decay", "updated")


@dataclass(frozen=True)
class OptimizerClass:
    """Parameters the optimizer treats alike. ``param_group`` is None for parameters outside the optimizer."""

    id: int
    param_group: int | None
    trained: bool                 # requires_grad and in the optimizer: the optimizer can move it
    requires_grad: bool           # its gradient is computed (the symmetry's constraint can be observed)
    fresh_buffer: bool            # no momentum buffer when the log began (PyTorch's undampened first step)
    rule: str                     # "sgd" | "adam" | the optimizer class name, lower case
    nesterov: bool = False
    decoupled_weight_decay: bool = False
    params: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        where = "outside the optimizer" if self.param_group is None else f"param group {self.param_group}"
        state = "" if self.trained else (", frozen" if self.requires_grad else ", frozen (requires_grad off)")
        buf = "" if self.fresh_buffer else ", momentum buffer at start"
        return where + state + buf

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = list(self.params)
        d["label"] = self.label
        return d

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OptimizerClass":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["params"] = tuple(known.get("params") or ())
        return cls(**known)


def rule_of(optimizer: Any) -> str:
    """The update rule's name: AdamW is Adam with decoupled weight decay."""
    name = type(optimizer).__name__.lower()
    return "adam" if name == "adamw" else name


def group_hyperparameters(optimizer: Any, group: Mapping[str, Any]) -> dict[str, float]:
    """The numbers that act on a param group this step (Adam's β₁ stands in for momentum)."""
    betas = group.get("betas")
    momentum = group.get("momentum", betas[0] if betas else 0.0)
    return {"lr": float(group.get("lr", float("nan"))), "momentum": float(momentum),
            "dampening": float(group.get("dampening", 0.0)), "weight_decay": float(group.get("weight_decay", 0.0))}


def _decoupled(optimizer: Any, group: Mapping[str, Any]) -> bool:
    return bool(group.get("decoupled_weight_decay", type(optimizer).__name__ == "AdamW"))


def has_momentum_buffer(optimizer: Any, param: Any) -> bool:
    state = optimizer.state.get(param) if hasattr(optimizer, "state") else None
    if not state:
        return False
    return state.get("momentum_buffer") is not None or state.get("exp_avg") is not None


def assign_classes(optimizer: Any, params: Mapping[str, Any]) -> tuple[list[OptimizerClass], dict[str, int]]:
    """Classes of the named tracked parameters (fixed for a log) and each parameter's class id."""
    group_of = {id(p): gi for gi, grp in enumerate(optimizer.param_groups) for p in grp["params"]}
    rule = rule_of(optimizer)
    keys: dict[tuple, list[str]] = {}
    for name, p in params.items():
        gi = group_of.get(id(p))
        trained = gi is not None and bool(p.requires_grad)
        key = (gi is None, -1 if gi is None else gi, trained, bool(p.requires_grad),
               not has_momentum_buffer(optimizer, p))
        keys.setdefault(key, []).append(name)
    classes: list[OptimizerClass] = []
    assignment: dict[str, int] = {}
    for cid, (key, names) in enumerate(sorted(keys.items())):
        _, gi, trained, requires_grad, fresh = key
        grp = optimizer.param_groups[gi] if gi >= 0 else {}
        classes.append(OptimizerClass(cid, gi if gi >= 0 else None, trained, requires_grad, fresh, rule,
                                      bool(grp.get("nesterov", False)), _decoupled(optimizer, grp) if grp else False,
                                      tuple(names)))
        for n in names:
            assignment[n] = cid
    return classes, assignment


def check_classes(logged: Sequence[OptimizerClass], optimizer: Any, params: Mapping[str, Any]) -> str | None:
    """Why a resumed tracker's parameters no longer fit the logged classes (None when they fit)."""
    group_of = {id(p): gi for gi, grp in enumerate(optimizer.param_groups) for p in grp["params"]}
    by_name = {n: c for c in logged for n in c.params}
    for name, p in params.items():
        c = by_name.get(name)
        if c is None:
            return f"parameter {name} is not in the logged classes"
        if group_of.get(id(p)) != c.param_group:
            return f"parameter {name} moved from param group {c.param_group} to {group_of.get(id(p))}"
    return None


def class_row(optimizer: Any, cls: OptimizerClass, params: Sequence[Any]) -> list[float]:
    """This step's ``CLASS_COLUMNS`` for one class (read just before the update)."""
    if cls.param_group is None or not cls.trained:
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    grp = optimizer.param_groups[cls.param_group]
    hp = group_hyperparameters(optimizer, grp)
    with_grad = sum(1 for p in params if p.grad is not None)
    return [hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"], with_grad / max(1, len(params))]
