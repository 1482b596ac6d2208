"""The optimizer from its config (configs/optimizer/), including the paper's scalar AdaGrad-Norm."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from . import checks
from .components import build, locate
from .errors import ConfigError
from .run_keys import run_keys


class AdaGradNorm(torch.optim.Optimizer):
    """AdaGrad-Norm: one scalar accumulator for the whole model.

    v <- v + ||g||^2 (over every parameter of every group), then x <- x - lr * g / sqrt(v).
    `initial_accumulator_value` is v_0 > 0. Weight decay, if any, is added to g first (coupled).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-2,
        initial_accumulator_value: float = 1e-10,
        weight_decay: float = 0.0,
    ) -> None:
        checks.positive("optimizer.lr", lr)
        checks.positive("optimizer.initial_accumulator_value", initial_accumulator_value, why="v_0 of AdaGrad-Norm")
        checks.number("optimizer.weight_decay", weight_decay, 0)
        defaults = dict(lr=lr, initial_accumulator_value=initial_accumulator_value, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _accumulator_state(self) -> dict:
        # torch's state_dict only serializes per-parameter state, so the model-wide scalar
        # lives in the state of the first parameter.
        first = self.param_groups[0]["params"][0]
        state = self.state[first]
        if "norm_sq_sum" not in state:
            v0 = self.param_groups[0]["initial_accumulator_value"]
            state["norm_sq_sum"] = torch.tensor(v0, dtype=first.dtype, device=first.device)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        directions: list[tuple[dict, list[torch.Tensor], list[torch.Tensor]]] = []
        total_sq = None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            group_sq = torch.stack([g.pow(2).sum() for g in grads]).sum()
            total_sq = group_sq if total_sq is None else total_sq + group_sq
            directions.append((group, params, grads))
        if total_sq is None:
            return loss
        state = self._accumulator_state()
        state["norm_sq_sum"].add_(total_sq)
        denom = state["norm_sq_sum"].sqrt()
        for group, params, grads in directions:
            for p, g in zip(params, grads):
                p.add_(g / denom, alpha=-group["lr"])
        return loss


def betas(key: str, value: Any) -> Any:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(
            checks.is_number(b) and 0 <= b < 1 for b in value)):
        checks.refuse(key, list(value) if isinstance(value, tuple) else value, "two numbers in [0, 1)")
    return value


# torch.optim's constructors are not ours, and check less (lr=0, momentum=1.5 and lr="abc" get through or fail
# with a traceback): their hyperparameters are checked here, in front of them, each by name.
TORCH_HYPERPARAMETERS = {
    "lr": checks.positive,
    "eps": lambda key, value: checks.number(key, value, 0),
    "weight_decay": lambda key, value: checks.number(key, value, 0),
    "initial_accumulator_value": lambda key, value: checks.number(key, value, 0),
    "lr_decay": lambda key, value: checks.number(key, value, 0),
    "momentum": checks.fraction,
    "dampening": lambda key, value: checks.number(key, value, 0, 1),
    "betas": betas,
    "nesterov": checks.switch,
    "amsgrad": checks.switch,
}


def build_optimizer(cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of config `cfg` (its `_target_`, or that of configs/optimizer/<cfg["name"]>.yaml) over
    `params`; the keys but the labels are its hyperparameters."""
    if getattr(locate("optimizer", cfg), "__module__", "").startswith("torch.optim"):
        for key, value in cfg.items():
            try:
                if key in TORCH_HYPERPARAMETERS:
                    TORCH_HYPERPARAMETERS[key](f"optimizer.{key}", value)
            except ValueError as error:
                raise ConfigError(str(error)) from None
    return build("optimizer", cfg, params, run_keys=run_keys("optimizer"))

