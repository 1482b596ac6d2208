"""Optimizers by config name, including the paper's scalar AdaGrad-Norm."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .components import build
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
        if lr <= 0:
            raise ValueError(f"optimizer.lr={lr} must be > 0")
        if initial_accumulator_value <= 0:
            raise ValueError(
                f"optimizer.initial_accumulator_value={initial_accumulator_value} must be > 0 (v_0 of AdaGrad-Norm)"
            )
        if weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay={weight_decay} must be >= 0")
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


SHIPPED_OPTIMIZERS = {
    "adagrad": torch.optim.Adagrad,
    "adagrad_norm": AdaGradNorm,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "sgdm": torch.optim.SGD,
}
OPTIMIZERS = tuple(SHIPPED_OPTIMIZERS)

def build_optimizer(cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of config `cfg` (its `_target_`, or the shipped one named `cfg["name"]`) over `params`;
    the keys but the labels are its hyperparameters."""
    return build("optimizer", cfg, params, shipped=SHIPPED_OPTIMIZERS, run_keys=run_keys("optimizer"))

