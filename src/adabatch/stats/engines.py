"""Statistics engines. Two form every example's gradient, for every trainable parameter: Opacus
(hooks that capture activations and output gradients) and torch.func (vmap of grad over examples, the
authors' approach). The ghost engine (ghost/) forms none where an identity is cheaper; as
ghost_measured, it chooses each layer's form by timing them on its first pass.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from abc import abstractmethod

import torch
from torch import nn

from ..losses import summed_cross_entropy
from .base import StatisticsEngine
from .ghost import GhostEngine, Loss

ENGINES = ("ghost", "ghost_measured", "opacus", "functorch")


class PerExampleEngine(StatisticsEngine):
    """An engine that forms per-example gradients, reduces them to the sums and drops them."""

    def __init__(self, model: nn.Module, loss: Loss = summed_cross_entropy) -> None:
        super().__init__(model)
        self.loss = loss  # (outputs, targets) -> the examples' losses, summed
        self._kept: list[torch.Tensor] | None = None

    def can_keep(self, world_size):
        return True  # the kept gradients are this rank's own examples: any ḡ can be applied later

    def first_phase(self, x, y, sums, autocast, keep):
        loss, per_example = self.per_example_gradients(x, y, autocast)
        sums.add_examples(per_example)
        self._kept = per_example if keep else None
        return loss

    def kept_inner_products(self, sums, mean_grad):
        kept, self._kept = self._kept, None
        sums.add_inner_products(kept, mean_grad)

    def inner_products(self, x, y, sums, mean_grad, autocast):
        sums.add_inner_products(self.per_example_gradients(x, y, autocast)[1], mean_grad)

    @abstractmethod
    def per_example_gradients(
        self, x: torch.Tensor, y: torch.Tensor, autocast: contextlib.AbstractContextManager | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(sum of the examples' losses, [per-example gradient (n, *p.shape) for p in params]).

        May leave anything in p.grad: the caller sets the batch gradient afterwards.
        """


class OpacusEngine(PerExampleEngine):
    def __init__(self, model: nn.Module, loss: Loss = summed_cross_entropy) -> None:
        super().__init__(model, loss)
        from opacus import GradSampleModule
        from opacus.validators import ModuleValidator

        from ..models import register_opacus_samplers

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ValueError(f"per-example gradients are not defined for this model: {errors[0]}; use model.norm=group")
        register_opacus_samplers()
        register_contiguous_conv_sampler()
        # Opacus' hooks see no input that requires grad at the first layer: expected, not a problem.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
        self.wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        self.wrapped.disable_hooks()  # the hooks sit on the model's own modules: off outside tested steps

    def reset(self):
        super().reset()
        # What Opacus' hooks keep between a layer's forward and its backward, for a backward that never came.
        self.wrapped.set_grad_sample_to_none()
        for p in self.params:
            p._forward_counter = 0
            if hasattr(p, "_current_grad_sample"):
                del p._current_grad_sample
        for module in self.wrapped.modules():
            for name in ("activations", "max_batch_len"):
                if hasattr(module, name):
                    delattr(module, name)

    def per_example_gradients(self, x, y, autocast=None):
        self.wrapped.enable_hooks()
        try:
            with autocast or contextlib.nullcontext():
                outputs = self.wrapped(x)
            loss = self.loss(outputs, y)
            loss.backward()
        finally:
            self.wrapped.disable_hooks()
        grads = []
        for p in self.params:
            # Under bf16 autocast Opacus forms g_i from bf16 activations and output gradients, in bf16:
            # lift them to the parameter's dtype, as the other engines give them, before they are squared.
            grads.append(p.grad_sample.to(p.dtype))
            p.grad_sample = None  # Opacus would otherwise accumulate across micro-batches
        return loss.detach(), grads


def register_contiguous_conv_sampler() -> None:
    """Opacus' conv sampler unfolds activations with `as_strided`, assuming a contiguous layout. On
    the CPU, torch may hand a conv a channels-last input (e.g. after a 1-channel conv), and the
    per-example weight gradients then come out wrong (seen with opacus 1.6, torch 2.15). Make the
    activations contiguous before the unfold."""
    from opacus.grad_sample import register_grad_sampler
    from opacus.grad_sample.conv import compute_conv_grad_sample

    def contiguous_conv_grad_sample(layer, activations, backprops):
        return compute_conv_grad_sample(layer, [a.contiguous() for a in activations], backprops)

    register_grad_sampler([nn.Conv1d, nn.Conv2d, nn.Conv3d])(contiguous_conv_grad_sample)


class FunctorchEngine(PerExampleEngine):
    def __init__(self, model: nn.Module, loss: Loss = summed_cross_entropy) -> None:
        super().__init__(model, loss)
        from torch.func import functional_call, grad, vmap

        names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.names = names

        def example_loss(params, buffers, x, y):
            outputs = functional_call(model, (params, buffers), (x.unsqueeze(0),))
            loss = self.loss(outputs, y.unsqueeze(0))
            return loss, loss

        self._per_example = vmap(grad(example_loss, has_aux=True), in_dims=(None, None, 0, 0))

    def per_example_gradients(self, x, y, autocast=None):
        params = {name: p.detach() for name, p in zip(self.names, self.params)}
        buffers = dict(self.model.named_buffers())
        with autocast or contextlib.nullcontext():
            grads, losses = self._per_example(params, buffers, x, y)
        return losses.sum().detach(), [grads[name] for name in self.names]


def build_engine(name: str, model: nn.Module, loss: Loss = summed_cross_entropy) -> StatisticsEngine:
    """`loss(outputs, targets)`: the examples' losses, summed (default: classification cross-entropy)."""
    engines = {"ghost": GhostEngine, "ghost_measured": functools.partial(GhostEngine, measure_forms=True),
               "opacus": OpacusEngine, "functorch": FunctorchEngine}
    if name not in engines:
        raise ValueError(f"batch_size.engine={name!r} is unknown; choose one of {', '.join(ENGINES)}")
    return engines[name](model, loss=loss)
