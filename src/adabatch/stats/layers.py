"""Per-layer rules of the ghost engine: a module's batch gradient and per-example statistics from its
input `a` and the gradient `delta` of the summed loss with respect to its output (delta_i is example
i's own output gradient), without forming per-example gradients wherever an identity is cheaper
(paper-notes §2). Autograd computes no parameter gradient in a ghost pass: the rules do.

- A dense map y_t = W a_t + b at T positions of an example (Linear over tokens; Conv2d over output
  pixels, a_t being the unfolded patch) has g_i = sum_t delta_it a_itᵀ (d_out x d_in), so
  ||g_i||² = <A_i A_iᵀ, D_i D_iᵀ> (the Gram form, T² (d_in + d_out) per example) or, where forming g_i
  costs less (T d_in d_out, and it replaces the batch gradient's own computation), from g_i itself;
  with T = 1 it is ||delta_i||² ||a_i||², and sum_i g_i⊙g_i = (delta⊙delta)ᵀ(a⊙a). Inner products
  with a direction G: <g_i, G> = sum_t <delta_it, G a_it>, the layer applied to a_i with weight G,
  dotted with delta_i (or <g_i, G> directly where g_i was formed).
- Normalization layers, biases and embeddings have per-example gradients no larger than the
  activations: they are formed. A custom module gets the same treatment by defining
  `per_example_gradients(a, delta) -> {parameter: (n, *parameter.shape)}`.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..device import synchronize

InnerProducts = Callable[[list[torch.Tensor]], list[torch.Tensor]]
# Form a dense layer's per-example gradients where the Gram form would take at least this many
# multiply-adds per element of them; else use the Gram form. Forming takes a batched matmul of the
# batch gradient's multiply-adds (T d_in d_out per example), which then gives the batch gradient too,
# and writes and reads the d_out d_in elements of each g_i: memory traffic. The Gram form takes
# T² (d_in + d_out) multiply-adds per example besides the batch gradient. Timed in the rules alone at
# b = 128 on the 2-core Xeon of results/bench/cpu.md: at 33 multiply-adds per element (the ViT's MLP
# layers) forming took 11-12 ms against 16-17 for the Gram form; at 20 and 18 (ResNet-18's 8x8
# convolutions) 89 against 82 and 187 against 136 ms. Gradients kept for the inner products (KEEP_FACTOR
# below) also save the Gram form's second application of the layer, which would favour forming there
# more; at b = 128 the shipped models' kept layers are all formed by this count anyway. The engine
# ghost_measured times the two forms on the machine instead (DenseRule.weight_form).
FORM_RATIO = 25
MIN_CHUNK_ELEMENTS = 1 << 22
# What a formed layer holds at once (a chunk's patches and per-example gradients) stays within this share
# of the elements of all layer inputs of the pass, and at least MIN_TRANSIENT_ELEMENTS: a plain step's
# peak memory is mostly those inputs. Larger chunks run faster (fewer, larger matmuls); the share keeps
# the peak within a few percent of a plain step's.
TRANSIENT_SHARE = 1 / 16
# With inner products in the same pass, a layer keeps all its per-example gradients until its batch
# gradient is known where they fit in KEEP_FACTOR times that (else it applies the layer once more, a
# pass as costly as forming them): the ViT's MLP layers (9.4 M elements at b = 128, about 1.7x the
# share) then keep theirs, which took its inner-product tests from 1.54x a plain step in one pair of
# `make bench` runs to 1.33x-1.42x in the next (issue 18's notes), and its peak memory from 1.01x to 1.09x.
KEEP_FACTOR = 2
MIN_TRANSIENT_ELEMENTS = 1 << 20

# Per-example conv gradients as one grouped convolution, rather than patches and a batched matmul, when
# the patches would be several times larger than the gradients they give (more than 4 output positions
# per output channel: the grouped convolution saves writing and reading them, but runs a slower kernel
# than the matmul), the kernel is larger than 1x1 (else the patches are the input itself) and the input
# has at least a SIMD vector of channels (a grouped convolution vectorizes over a group's input channels;
# with 1 or 3 it runs 2-2.4x slower than the matmul). In ResNet-18's passes at b = 128 on the 2-core Xeon
# of results/bench/cpu.md (scripts/profile_layers.py), 2 positions per output channel (`stages.1`) took
# half the time with patches (390 against 758 ms for its four 3x3 convolutions); 8 (the CIFAR CNN's
# second layer) 1.6x less with the grouped convolution; 16 (`stages.0`) about the same either way.
GROUPED_CONV_MIN_CHANNELS = 8
GROUPED_CONV_POSITIONS_PER_OUTPUT = 4
# A Gram-form convolution's input Gram matrices from the channels' inner products at pairs of padded
# positions (Conv2dRule.input_grams) when that costs at most this many times the multiply-adds of the
# Gram matrices from patches: it writes no patches, so it is cheaper at equal counts.
GRAM_BY_OFFSETS_COST = 1.0
# With measured forms (engine ghost_measured), a dense layer that can take either form times each this
# many times on its first pass, taking turns, and keeps the faster one (its fastest round) for the run.
MEASURED_ROUNDS = 3


def transient_budget(input_elements: int) -> int:
    """The elements a formed layer may hold at once, given those of all layer inputs of the pass."""
    return max(MIN_TRANSIENT_ELEMENTS, int(input_elements * TRANSIENT_SHARE))


class Workspace:
    """Memory in which the formed layers of one pass write their per-example gradients, one layer after
    another. A new tensor of this size is fresh pages from the system on the CPU, whose first touch
    costs more than the arithmetic: a ViT MLP layer's kept gradients took 24 ms in fresh memory and 15 ms
    in reused memory (scripts/profile_layers.py, b = 128, on the 2-core Xeon of results/bench/cpu.md).
    It grows to the largest of those a layer takes (within its budget, or KEEP_FACTOR times it), and is
    released with the pass."""

    def __init__(self) -> None:
        self.memory: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialized tensor of `shape` with the dtype and device of `like`."""
        elements, memory = math.prod(shape), self.memory
        if memory is None or memory.numel() < elements or memory.dtype != like.dtype or memory.device != like.device:
            self.memory = memory = None  # released before the larger one is allocated
            self.memory = memory = torch.empty(elements, dtype=like.dtype, device=like.device)
        return memory[:elements].view(shape)


@dataclass
class LayerSums:
    """Per trainable parameter of a module: sum_i g_i, sum_i ||g_i||², sum_i g_i⊙g_i when asked for,
    and, when asked to keep, `inner_products`: <g_i, G> for every example given one G per parameter."""

    grad: list[torch.Tensor]
    sq_norm: list[torch.Tensor]
    coord_sq: list[torch.Tensor] | None = None
    inner_products: InnerProducts | None = None


class LayerRule(ABC):
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.params = [p for p in module.parameters(recurse=False) if p.requires_grad]

    @abstractmethod
    def first_phase(self, a: torch.Tensor, delta: torch.Tensor, coordinates: bool, keep: bool, budget: int,
                    workspace: Workspace) -> LayerSums:
        """`budget`: the elements the rule may hold at once (see TRANSIENT_SHARE); `workspace`: the pass's
        memory for per-example gradients."""

    @abstractmethod
    def inner_products(self, a: torch.Tensor, delta: torch.Tensor, directions: list[torch.Tensor]) -> list[torch.Tensor]:
        """(n,) per parameter: <g_i, G> with G the parameter's entry of `directions`."""


def formed_sums(grads: list[torch.Tensor], coordinates: bool, keep: bool) -> LayerSums:
    """The sums from per-example gradients [(n, *p.shape) per parameter]."""
    coord_sq = [g.square().sum(0) for g in grads] if coordinates else None
    return LayerSums(
        grad=[g.sum(0) for g in grads],
        sq_norm=[c.sum() for c in coord_sq] if coordinates else [g.square().sum() for g in grads],
        coord_sq=coord_sq,
        inner_products=(lambda directions: dot_each(grads, directions)) if keep else None,
    )


def combine(parts: list[LayerSums]) -> LayerSums:
    """One module's sums from those of its parameters (one parameter each)."""
    keep = parts[0].inner_products is not None
    return LayerSums(
        grad=[g for part in parts for g in part.grad],
        sq_norm=[s for part in parts for s in part.sq_norm],
        coord_sq=None if parts[0].coord_sq is None else [c for part in parts for c in part.coord_sq],
        inner_products=(lambda directions: [part.inner_products([d])[0] for part, d in zip(parts, directions)])
        if keep else None,
    )


def squared_norm(t: torch.Tensor) -> torch.Tensor:
    """||t||², from the norms of its rows (one read of t, nothing written). It rounds like t.square().sum(),
    where one float32 dot product of t with itself, or the norm of t as a whole, rounds far worse."""
    return torch.linalg.vector_norm(t, dim=-1).square_().sum()


def dot_each(grads: list[torch.Tensor], directions: list[torch.Tensor]) -> list[torch.Tensor]:
    return [g.flatten(1) @ d.flatten() for g, d in zip(grads, directions)]


class FormedRule(LayerRule):
    """Modules whose per-example gradients are no larger than their activations: form them."""

    def first_phase(self, a, delta, coordinates, keep, budget, workspace):
        return formed_sums(self.per_example(a, delta), coordinates, keep)

    def inner_products(self, a, delta, directions):
        return dot_each(self.per_example(a, delta), directions)

    @abstractmethod
    def per_example(self, a: torch.Tensor, delta: torch.Tensor) -> list[torch.Tensor]: ...


class GroupNormRule(FormedRule):
    def per_example(self, a, delta):
        # PyTorch's own GroupNorm backward, on the batch seen as one example whose channels are every
        # example's channels (n x num_groups groups): its weight and bias gradients per channel are
        # the per-example gradients. It reads a and delta once, with the normalization's statistics,
        # where recomputing the normalized input and multiplying wrote two tensors the size of a
        # (fresh memory, 1.7x slower at ResNet-18's 32x32 layers on the CPU).
        m = self.module
        n, channels, positions = a.shape[0], a.shape[1], a[0, 0].numel()
        a, delta = a.reshape(1, n * channels, positions).contiguous(), delta.reshape(1, n * channels, positions).contiguous()
        groups = n * m.num_groups
        _, mean, rstd = torch.native_group_norm(a, None, None, 1, n * channels, positions, groups, m.eps)
        _, weight, bias = torch.ops.aten.native_group_norm_backward(
            delta, a, mean, rstd, None, 1, n * channels, positions, groups, [False, True, True])
        grads = {m.weight: weight.view(n, channels), m.bias: bias.view(n, channels)}
        return [grads[p] for p in self.params]


class LayerNormRule(FormedRule):
    def per_example(self, a, delta):
        m = self.module
        shape = m.normalized_shape
        normalized = F.layer_norm(a, shape, eps=m.eps)
        per_example = lambda t: t.reshape(a.shape[0], -1, *shape).sum(1)  # noqa: E731  (over tokens)
        grads = {m.weight: per_example(normalized.mul_(delta))}
        if m.bias is not None:
            grads[m.bias] = per_example(delta)
        return [grads[p] for p in self.params]


class OwnRule(FormedRule):
    """A module that states its own per-example gradients (`per_example_gradients(a, delta)`)."""

    def per_example(self, a, delta):
        grads = self.module.per_example_gradients(a, delta)
        return [grads[p] for p in self.params]


class DenseRule(LayerRule):
    """y_t = W a_t + b at T positions of each example (see the module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        self.trained = {"weight": module.weight.requires_grad,
                        "bias": module.bias is not None and module.bias.requires_grad}
        self.measure_forms = False  # ghost_measured's engine sets it: time the forms rather than count
        self.measured_form: str | None = None  # "gram" or "formed": measured, or restored from a checkpoint

    @abstractmethod
    def patches(self, a: torch.Tensor) -> torch.Tensor:
        """(c, T, d_in): the inputs a_t of the c examples in `a`."""

    @abstractmethod
    def output_rows(self, delta: torch.Tensor) -> torch.Tensor:
        """(n, T, d_out): delta_t of every example."""

    @abstractmethod
    def apply(self, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's linear map with `weight` and no bias, shaped like its output."""

    @abstractmethod
    def weight_gradient(self, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """sum_i g_i of the weight, as autograd would compute it."""

    def form(self, a: torch.Tensor, delta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(c, d_out, d_in): the weight's per-example gradients of the c examples in (a, delta), in `out`
        where given (a rule may return new memory instead), each row's entries in the order of
        `formed_order`."""
        return torch.bmm(self.output_rows(delta).transpose(1, 2), self.patches(a), out=out)

    def formed_order(self, weight: torch.Tensor, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """(d_out, d_in): a tensor shaped like the weight, its entries in the order of `form`'s rows."""
        return weight.reshape(weight.shape[0], -1)

    def as_weight(self, formed: torch.Tensor, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The inverse of `formed_order`: entries in the order of `form`'s rows, shaped like the weight."""
        return formed.view_as(self.module.weight)

    builds_patches = False  # whether `patches` builds new memory (unfolding) rather than a view

    def input_grams(self, a: torch.Tensor) -> torch.Tensor:
        """(c, T, T): A_i A_iᵀ, the inner products of the inputs a_t at every pair of positions, for the c
        examples in `a`."""
        inputs = self.patches(a)
        return inputs @ inputs.transpose(1, 2)

    def input_gram_elements(self, a: torch.Tensor, positions: int) -> int:
        """The elements per example that `input_grams` holds besides the Gram matrices."""
        return self.patch_elements(positions)

    def patch_elements(self, positions: int) -> int:
        """The elements of one example's patches that `patches` builds (none where it returns a view)."""
        return positions * self.module.weight[0].numel() if self.builds_patches else 0

    def forms_from_patches(self, a: torch.Tensor, delta: torch.Tensor) -> bool:
        """Whether `form` builds patches (else its memory is the per-example gradients alone)."""
        return self.builds_patches

    def formed_chunk(self, a: torch.Tensor, delta: torch.Tensor, positions: int, budget: int) -> int:
        """How many examples the formed form takes at a time: their per-example gradients, and patches
        where `form` builds them, within `budget` elements."""
        weight = self.module.weight
        form_elements = weight.numel() + (self.patch_elements(positions) if self.forms_from_patches(a, delta) else 0)
        return max(1, min(len(a), budget // form_elements))

    def first_phase(self, a, delta, coordinates, keep, budget, workspace):
        m = self.module
        rows = self.output_rows(delta)
        found = {}
        if self.trained["bias"]:
            found[m.bias] = formed_sums([rows.sum(1)], coordinates, keep)
        if self.trained["weight"]:
            found[m.weight] = self._weight_first_phase(a, delta, rows, coordinates, keep, budget, workspace)
        return combine([found[p] for p in self.params])

    def weight_forms(self, n: int, positions: int, coordinates: bool, keep: bool, budget: int) -> list[str]:
        """The forms that can find the weight's sums for n examples of T positions, the one the counts
        choose first: "outer" (T = 1), "gram", or "formed" per-example gradients ("formed, kept" when kept
        for the inner products)."""
        d_out, d_in = self.module.weight.shape[0], self.module.weight[0].numel()
        if positions == 1:
            return ["outer"]
        keep_formed = keep and n * d_out * d_in <= KEEP_FACTOR * budget
        formed = "formed, kept" if keep_formed else "formed"
        if coordinates:
            return [formed]
        forming_is_cheaper = positions**2 * (d_in + d_out) >= FORM_RATIO * d_in * d_out
        return [formed, "gram"] if forming_is_cheaper else ["gram", formed]

    def weight_form(self, n: int, positions: int, coordinates: bool, keep: bool, budget: int) -> str:
        """The form the rule takes: the measured one where it has measured them, else the counts' choice."""
        return self._chosen(self.weight_forms(n, positions, coordinates, keep, budget))

    def _chosen(self, forms: list[str]) -> str:
        measured = [f for f in forms if self.measured_form is not None and f.startswith(self.measured_form)]
        return (measured or forms)[0]

    def _measure_forms(self, forms: list[str], sums_in: Callable[[str], LayerSums], keep: bool) -> LayerSums:
        """Time each form MEASURED_ROUNDS times, taking turns (with its inner products when kept: the
        batch gradient stands in for ḡ), remember the fastest as "gram" or "formed", return its sums."""
        seconds, found = dict.fromkeys(forms, math.inf), {}
        device = self.module.weight.device
        for _ in range(MEASURED_ROUNDS):
            for form in forms:
                synchronize(device)
                start = time.perf_counter()
                found[form] = sums_in(form)
                if keep:
                    found[form].inner_products(found[form].grad)
                synchronize(device)
                seconds[form] = min(seconds[form], time.perf_counter() - start)
        fastest = min(forms, key=seconds.__getitem__)
        self.measured_form = "gram" if fastest == "gram" else "formed"
        return found[fastest]

    def _weight_first_phase(self, a, delta, rows, coordinates, keep, budget, workspace) -> LayerSums:
        n, positions, _ = rows.shape
        forms = self.weight_forms(n, positions, coordinates, keep, budget)
        sums_in = lambda form: self._weight_sums(form, a, delta, rows, coordinates, keep, budget, workspace)  # noqa: E731
        if self.measure_forms and self.measured_form is None and len(forms) > 1:
            return self._measure_forms(forms, sums_in, keep)
        return sums_in(self._chosen(forms))

    def _weight_sums(self, form, a, delta, rows, coordinates, keep, budget, workspace) -> LayerSums:
        weight = self.module.weight
        n, positions, d_out = rows.shape
        d_in = weight[0].numel()
        apply_and_dot = (lambda directions: [self._apply_and_dot(a, delta, directions[0])]) if keep else None

        if form == "outer":  # ||g_i||² = ||delta_i||² ||a_i||², sum_i g_i⊙g_i = (delta⊙delta)ᵀ(a⊙a)
            inputs, outputs = self.patches(a)[:, 0], rows[:, 0]
            grad = (outputs.T @ inputs).view_as(weight)
            sq_norm = (inputs.square().sum(1) * outputs.square().sum(1)).sum()
            coord_sq = [(outputs.square().T @ inputs.square()).view_as(weight)] if coordinates else None
            return LayerSums([grad], [sq_norm], coord_sq, apply_and_dot)

        keep_formed = form == "formed, kept"
        if form == "gram":  # a chunk of examples at a time
            sq_norm = torch.zeros((), dtype=rows.dtype, device=rows.device)
            # Not TRANSIENT_SHARE of the pass: a chunk's patches and Gram matrices stay within this layer's
            # own input and output gradient, which the pass holds anyway (and at least MIN_CHUNK_ELEMENTS).
            budget = max(a.numel() + delta.numel(), MIN_CHUNK_ELEMENTS)
            for chunk in chunks(n, budget // (self.input_gram_elements(a, positions) + 2 * positions**2)):
                outputs = rows[chunk]
                sq_norm += (self.input_grams(a[chunk]) * (outputs @ outputs.transpose(1, 2))).sum()
            return LayerSums([self.weight_gradient(a, delta)], [sq_norm], None, apply_and_dot)

        grad = torch.zeros(1, d_out * d_in, dtype=weight.dtype, device=weight.device)
        sq_norm = torch.zeros((), dtype=rows.dtype, device=rows.device)
        coord_sq = torch.zeros_like(grad) if coordinates else None
        formed = []
        size = self.formed_chunk(a, delta, positions, budget)
        # The chunks' gradients go to the workspace: kept, each chunk to its own examples' rows; else every
        # chunk to the same rows. Their sums over examples are matrix products with a row of ones,
        # accumulated in place: twice as fast as sum(0) and an addition.
        buffer = workspace.take((n if keep_formed else size, d_out, d_in), weight)
        ones = torch.ones(1, size, dtype=weight.dtype, device=weight.device)
        for chunk in chunks(n, size):
            count = len(range(n)[chunk])
            grads = self.form(a[chunk], delta[chunk], buffer[chunk] if keep_formed else buffer[:count])
            grad.addmm_(ones[:, :count], grads.view(count, -1))
            if keep_formed:
                formed.append(grads)
            if coordinates:
                squares = grads.square() if keep_formed else grads.square_()
                coord_sq.addmm_(ones[:, :count], squares.view(count, -1))
            else:
                sq_norm += squared_norm(grads)
        grad, coord_sq = self.as_weight(grad, a, delta), None if coord_sq is None else self.as_weight(coord_sq, a, delta)
        inner_products = apply_and_dot
        if keep_formed:
            def inner_products(directions):
                direction = self.formed_order(directions[0], a, delta).flatten()
                return [torch.cat([g.flatten(1) @ direction for g in formed])]
        if coordinates:
            sq_norm = coord_sq.sum()
        return LayerSums([grad], [sq_norm], [coord_sq] if coordinates else None, inner_products)

    def inner_products(self, a, delta, directions):
        m = self.module
        direction = dict(zip(self.params, directions))
        found = {}
        if self.trained["bias"]:
            found[m.bias] = self.output_rows(delta).sum(1) @ direction[m.bias]
        if self.trained["weight"]:
            found[m.weight] = self._apply_and_dot(a, delta, direction[m.weight])
        return [found[p] for p in self.params]

    def _apply_and_dot(self, a: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.apply(a, weight).mul_(delta).flatten(1).sum(1)  # apply's output is new memory


class LinearRule(DenseRule):
    def patches(self, a):
        return a.reshape(a.shape[0], -1, a.shape[-1])

    def output_rows(self, delta):
        return delta.reshape(delta.shape[0], -1, delta.shape[-1])

    def apply(self, a, weight):
        return F.linear(a, weight)

    def weight_gradient(self, a, delta):
        return delta.reshape(-1, delta.shape[-1]).T @ a.reshape(-1, a.shape[-1])


class Conv2dRule(DenseRule):
    builds_patches = True

    def __init__(self, module: nn.Conv2d) -> None:
        super().__init__(module)
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedLayer(f"Conv2d with groups={module.groups}, padding={module.padding!r}, "
                                   f"padding_mode={module.padding_mode!r} (supported: groups=1, numeric zero padding)")

    def patches(self, a):
        # What F.unfold returns, built from one strided view of the padded input per kernel offset:
        # stacking views copies at memory speed, several times faster than unfold on the CPU.
        n, channels = a.shape[:2]
        views = self._offset_windows(self._padded(a), (2,))
        return torch.stack(views, 2).reshape(n, channels * len(views), -1).transpose(1, 2)

    def input_grams(self, a):
        # A_i A_iᵀ[t, t'] = sum over kernel offsets k of M_i[t + k, t' + k], where M_i holds the inner
        # products of the channels at every pair of padded input positions: (H_p W_p)² C multiply-adds
        # and no patches, against T² C k_h k_w from patches (more for a stride-1 convolution over a small
        # image, whose T is close to H_p W_p).
        if not self.grams_by_offsets(a):
            return super().input_grams(a)
        padded = self._padded(a)
        n, channels, height, width = padded.shape
        flat = padded.reshape(n, channels, height * width)
        pairs = torch.bmm(flat.transpose(1, 2), flat).view(n, height, width, height, width)
        windows = self._offset_windows(pairs, (1, 3))
        grams = windows[0].clone(memory_format=torch.contiguous_format)
        for window in windows[1:]:
            grams += window
        positions = grams.shape[1] * grams.shape[2]
        return grams.view(n, positions, positions)

    def input_gram_elements(self, a, positions):
        if not self.grams_by_offsets(a):
            return super().input_gram_elements(a, positions)
        padded = math.prod(self._padded_size(a))
        return padded * padded + padded * a.shape[1]

    def grams_by_offsets(self, a: torch.Tensor) -> bool:
        """Whether `input_grams` sums shifted channel products (else it builds patches)."""
        taps, channels = math.prod(self.module.kernel_size), a.shape[1]
        padded, positions = math.prod(self._padded_size(a)), math.prod(self._output_size(*self._padded_size(a)))
        by_offsets = padded**2 * channels + taps * positions**2  # the products M_i, then a sum per offset
        return by_offsets <= GRAM_BY_OFFSETS_COST * positions**2 * channels * taps

    def _padded(self, a: torch.Tensor) -> torch.Tensor:
        ph, pw = self.module.padding
        return F.pad(a, (pw, pw, ph, ph)) if ph or pw else a

    def _padded_size(self, a: torch.Tensor) -> tuple[int, int]:
        (ph, pw), (height, width) = self.module.padding, a.shape[-2:]
        return height + 2 * ph, width + 2 * pw

    def _output_size(self, padded_height: int, padded_width: int) -> tuple[int, int]:
        m = self.module
        (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
        return (padded_height - dh * (kh - 1) - 1) // sh + 1, (padded_width - dw * (kw - 1) - 1) // sw + 1

    def _offset_windows(self, padded: torch.Tensor, dims: tuple[int, ...]) -> list[torch.Tensor]:
        """Per kernel offset, a strided view of `padded` at the input positions that the offset meets at
        each output position, along each pair of (row, column) dimensions starting at `dims`."""
        m = self.module
        (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
        rows, cols = self._output_size(*padded.shape[dims[0]:dims[0] + 2])
        views = []
        for i in range(kh):
            for j in range(kw):
                index = [slice(None)] * padded.dim()
                for d in dims:
                    index[d] = slice(i * dh, i * dh + sh * (rows - 1) + 1, sh)
                    index[d + 1] = slice(j * dw, j * dw + sw * (cols - 1) + 1, sw)
                views.append(padded[tuple(index)])
        return views

    def output_rows(self, delta):
        return delta.flatten(2).transpose(1, 2)

    def apply(self, a, weight):
        m = self.module
        return F.conv2d(a, weight, None, m.stride, m.padding, m.dilation)

    def weight_gradient(self, a, delta):
        return self._weight_backward(a, delta, self.module.weight.shape, groups=1)

    def forms_from_patches(self, a, delta):
        positions, channels = delta[0, 0].numel(), a.shape[1]
        single_tap = math.prod(self.module.kernel_size) == 1
        return (single_tap or channels < GROUPED_CONV_MIN_CHANNELS
                or positions <= GROUPED_CONV_POSITIONS_PER_OUTPUT * self.module.out_channels)

    def form(self, a, delta, out=None):
        if self._forms_channels_last(a, delta):
            return torch.bmm(delta.flatten(2), self._channels_last_patches(a), out=out)
        if self.forms_from_patches(a, delta):
            return super().form(a, delta, out)
        n, channels = a.shape[:2]
        # Each example as one group of a single grouped convolution: its weight gradient is g_i.
        shape = (n * self.module.out_channels, *self.module.weight.shape[1:])
        grads = self._weight_backward(a.reshape(1, n * channels, *a.shape[2:]),
                                      delta.reshape(1, -1, *delta.shape[2:]), shape, groups=n)
        return grads.view(n, self.module.out_channels, -1)

    def formed_order(self, weight, a, delta):
        if not self._forms_channels_last(a, delta):
            return super().formed_order(weight, a, delta)
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)

    def as_weight(self, formed, a, delta):
        if not self._forms_channels_last(a, delta):
            return super().as_weight(formed, a, delta)
        out_channels, channels, kh, kw = self.module.weight.shape
        return formed.view(out_channels, kh, kw, channels).permute(0, 3, 1, 2).contiguous()

    def _forms_channels_last(self, a: torch.Tensor, delta: torch.Tensor) -> bool:
        # Each patch is copied in runs of contiguous elements: an output row's positions from the input as
        # it is (channels first), or its channels from a channels-last copy of the input. The longer run
        # copies faster, and channels last also hands the batched matmul contiguous rows of patches. With
        # a single kernel offset the patches are no larger than that copy: channels first.
        taps = math.prod(self.module.kernel_size)
        return self.forms_from_patches(a, delta) and taps > 1 and a.shape[1] > delta.shape[-1]

    def _channels_last_patches(self, a: torch.Tensor) -> torch.Tensor:
        """(c, T, k_h k_w C): the patches of `patches` with each patch's entries ordered by kernel offset,
        then channel."""
        n = a.shape[0]
        padded = self._padded(a).permute(0, 2, 3, 1).contiguous()
        views = self._offset_windows(padded, (1,))
        rows, cols = views[0].shape[1:3]
        return torch.stack(views, 3).view(n, rows * cols, -1)

    def _weight_backward(self, a, delta, weight_shape, groups: int) -> torch.Tensor:
        m = self.module
        weight = a.new_empty(1).expand(weight_shape)  # only its shape is read
        return torch.ops.aten.convolution_backward(
            delta, a, weight, None, m.stride, m.padding, m.dilation, False, [0, 0], groups, [False, True, False]
        )[1]


class UnsupportedLayer(ValueError):
    pass


def chunks(n: int, size: int) -> list[slice]:
    size = max(1, min(n, size))
    return [slice(start, start + size) for start in range(0, n, size)]


def rule_for(module: nn.Module) -> LayerRule:
    if hasattr(module, "per_example_gradients"):
        return OwnRule(module)
    rules = {nn.Linear: LinearRule, nn.Conv2d: Conv2dRule, nn.GroupNorm: GroupNormRule, nn.LayerNorm: LayerNormRule}
    if type(module) not in rules:
        raise UnsupportedLayer(f"{type(module).__name__} has no ghost rule (rules exist for "
                               f"{', '.join(r.__name__ for r in rules)} and modules with per_example_gradients)")
    return rules[type(module)](module)
