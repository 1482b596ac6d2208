from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..forms import FormPolicy
from .base import UnsupportedLayer
from .dense import DenseRule
from .registry import register_rule


@register_rule(nn.Conv2d)
class Conv2dRule(DenseRule):
    builds_patches = True

    def __init__(self, module: nn.Conv2d, policy: FormPolicy) -> None:
        super().__init__(module, policy)
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
        return by_offsets <= self.policy.gram_by_offsets_cost * positions**2 * channels * taps

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
        return (single_tap or channels < self.policy.grouped_conv_min_channels
                or positions <= self.policy.grouped_conv_positions_per_output * self.module.out_channels)

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

    def form_label(self, a, delta, coordinates, keep, budget):
        label = super().form_label(a, delta, coordinates, keep, budget)
        if label.startswith("formed"):
            return label + (", patches" if self.forms_from_patches(a, delta) else ", grouped")
        if label == "gram":
            return label + (", offsets" if self.grams_by_offsets(a) else ", patches")
        return label

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
