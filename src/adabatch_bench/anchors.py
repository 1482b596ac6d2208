"""The bench's fair anchors: a test's statistics computed the way a user of Opacus or torch.func would
write them, in the model's float32, with nothing kept beyond what the statistics need. They are
timed next to this project's engines; they are not exact to the last digit (float32 sums) and are
not used for training.

- "opacus (as users call it)": `GradSampleModule(model, loss_reduction="sum")`, one forward and
  backward, then the statistics from `p.grad_sample`.
- "torch.func (as users call it)": `vmap(grad(loss of one example))` over the batch, then the same.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from adabatch.stats.sums import Needs

ANCHORS = {"opacus-user": "opacus (as users call it)", "functorch-user": "torch.func (as users call it)"}


def statistics_of(per_example: list[torch.Tensor], needs: Needs) -> dict[str, torch.Tensor]:
    """What a test reads, from per-example gradients [(n, *p.shape)] in their own dtype."""
    n = per_example[0].shape[0]
    mean = [g.mean(0) for g in per_example]
    mean_sq = sum(m.square().sum() for m in mean)
    sq_norms = sum(g.flatten(1).square().sum(1) for g in per_example)
    found = {"mean_sq": mean_sq, "norm_var": (sq_norms.sum() - n * mean_sq) / (n - 1)}
    if needs.inner_products:
        products = sum(g.flatten(1) @ m.flatten() for g, m in zip(per_example, mean))
        found["ip_var"] = products.var()
        found["orth_var"] = (sq_norms - products.square() / mean_sq).sum() / (n - 1)
    if needs.coordinates:
        found["coordinate_var"] = [g.var(0) for g in per_example]
    return found


def summed_cross_entropy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, y, reduction="sum")


class OpacusAsUsers:
    def __init__(self, model: torch.nn.Module, loss=summed_cross_entropy) -> None:
        from opacus import GradSampleModule

        self.loss = loss  # (outputs, targets) -> the examples' losses, summed

        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
        self.model = GradSampleModule(copy.deepcopy(model), batch_first=True, loss_reduction="sum")

    def step(self, x: torch.Tensor, y: torch.Tensor, needs: Needs) -> dict[str, torch.Tensor]:
        self.loss(self.model(x), y).backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        found = statistics_of([p.grad_sample for p in params], needs)
        for p in params:
            p.grad, p.grad_sample = p.grad / len(y), None
        return found


class TorchFuncAsUsers:
    def __init__(self, model: torch.nn.Module, loss=summed_cross_entropy) -> None:
        self.model = copy.deepcopy(model)
        self.names = [name for name, p in self.model.named_parameters() if p.requires_grad]
        buffers = dict(self.model.named_buffers())
        example_loss = loss

        def loss(params, x, y):
            outputs = functional_call(self.model, ({**params, **buffers}), (x.unsqueeze(0),))
            return example_loss(outputs, y.unsqueeze(0))

        self.per_example = vmap(grad(loss), in_dims=(None, 0, 0))

    def step(self, x: torch.Tensor, y: torch.Tensor, needs: Needs) -> dict[str, torch.Tensor]:
        params = {name: p.detach() for name, p in self.model.named_parameters() if name in self.names}
        grads = self.per_example(params, x, y)
        per_example = [grads[name] for name in self.names]
        found = statistics_of(per_example, needs)
        for (_, p), g in zip(((n, p) for n, p in self.model.named_parameters() if n in self.names), per_example):
            p.grad = g.mean(0)
        return found


def build_anchor(name: str, model: torch.nn.Module, loss=summed_cross_entropy):
    """`loss(outputs, targets)`: the examples' losses, summed (a task's `loss`; classification by default)."""
    return {"opacus-user": OpacusAsUsers, "functorch-user": TorchFuncAsUsers}[name](model, loss)
