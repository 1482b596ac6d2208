"""Batched data augmentation on the device with per-example random parameters.

The parameters of a whole batch are drawn once (`sample`) and then applied to
any slice of it (`apply`), so an example's augmented image does not depend on
how the batch is split into micro-batches or shards.

Augmentations run on the normalized tensor, so CropFlip's zero padding is 0 in
normalized space, i.e. the per-channel mean pixel rather than black (torchvision's
RandomCrop pads the raw image with black). Augmenting after normalization keeps
the pipeline a single pass over float tensors on the device.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop_flip", "vit")


class Augmentation(Protocol):
    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Parameters (count, k) for `count` examples, on the generator's device."""
        ...

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Augment x (n, C, H, W) float with params (n, k) from `sample`."""
        ...


class CropFlip:
    """The CIFAR ResNet recipe: random crop of the zero-padded image, then random horizontal flip (p=0.5).

    Params per example (int64): (top, left, flip), with top/left in [0, 2 * padding].
    """

    def __init__(self, padding: int = 4) -> None:
        self.padding = padding

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        offsets = torch.randint(0, 2 * self.padding + 1, (count, 2), generator=generator, device=device)
        flips = torch.randint(0, 2, (count, 1), generator=generator, device=device)
        return torch.cat([offsets, flips], dim=1)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = x.shape
        padded = F.pad(x, (self.padding,) * 4)
        params = params.to(x.device)
        top, left, flip = params[:, 0:1], params[:, 1:2], params[:, 2:3].bool()
        rows = top + torch.arange(height, device=x.device)  # (n, H)
        cols = torch.arange(width, device=x.device)
        cols = left + torch.where(flip, width - 1 - cols, cols)  # (n, W); flipping the crop reverses its columns
        examples = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(channels, device=x.device)[None, :, None, None]
        return padded[examples, channel, rows[:, None, :, None], cols[:, None, None, :]]


class FlipResizedCrop:
    """ViT recipe: horizontal flip (p=0.5), then RandomResizedCrop back to the input size (bilinear).

    Params per example (float32): (flip, crop_height, crop_width, top, left), all
    as fractions of the image side. As in torchvision, (scale, log-ratio) is drawn
    up to `attempts` times and the first crop that fits is kept, falling back to
    the full image; unlike torchvision the crop box is not rounded to whole pixels.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.8, 1.0),
        ratio: tuple[float, float] = (0.9, 1.1),
        attempts: int = 10,
    ) -> None:
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.attempts = attempts

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        u = torch.rand(count, self.attempts, 2, generator=generator, device=device)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[..., 0]
        aspect = torch.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * u[..., 1])
        widths, heights = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        fits = (widths <= 1) & (heights <= 1)
        first = fits.int().argmax(dim=1, keepdim=True)
        any_fit = fits.any(dim=1)
        ones = torch.ones(count, device=device)
        height = torch.where(any_fit, heights.gather(1, first).squeeze(1), ones)
        width = torch.where(any_fit, widths.gather(1, first).squeeze(1), ones)
        position = torch.rand(count, 2, generator=generator, device=device)
        top, left = position[:, 0] * (1 - height), position[:, 1] * (1 - width)
        flip = (torch.rand(count, generator=generator, device=device) < 0.5).float()
        return torch.stack([flip, height, width, top, left], dim=1)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        params = params.to(device=x.device, dtype=x.dtype)
        flip, crop_h, crop_w, top, left = params.unbind(dim=1)
        # Output pixel centres in normalized [-1, 1] coordinates (align_corners=False) are mapped
        # affinely into the crop box; a flip negates the x coordinate. The grid is built
        # elementwise (an axis-aligned affine_grid) so each example's result is independent of n.
        sign = 1 - 2 * flip
        x_scale, x_shift = sign * crop_w, sign * (2 * left + crop_w - 1)
        y_scale, y_shift = crop_h, 2 * top + crop_h - 1
        base_x = (2 * torch.arange(width, device=x.device, dtype=x.dtype) + 1) / width - 1
        base_y = (2 * torch.arange(height, device=x.device, dtype=x.dtype) + 1) / height - 1
        grid_x = (x_scale[:, None] * base_x + x_shift[:, None])[:, None, :].expand(n, height, width)
        grid_y = (y_scale[:, None] * base_y + y_shift[:, None])[:, :, None].expand(n, height, width)
        grid = torch.stack([grid_x, grid_y], dim=-1)
        # "border" keeps the half-pixel at the crop edge from blending with outside-image zeros.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def build_augmentation(name: str) -> Augmentation | None:
    if name == "none":
        return None
    if name == "crop_flip":
        return CropFlip()
    if name == "vit":
        return FlipResizedCrop()
    raise ValueError(f"dataset.augmentation={name!r} is unknown; choose one of {', '.join(AUGMENTATIONS)}")
