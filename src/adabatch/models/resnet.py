"""CIFAR-style ResNet-18 and ResNet-50 (3x3 stride-1 stem, no max-pool).

Written out instead of taken from torchvision because Opacus' backward hooks
reject in-place residual adds (``out += identity``) and in-place ReLUs.
"""

import torch
from torch import nn
from torch.nn import functional as F

from adabatch.checks import integer
from adabatch.models.norm import make_norm

STAGE_STRIDES = (1, 2, 2, 2)


def conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


def shortcut(in_channels: int, out_channels: int, stride: int, norm: str, groups: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 projection followed by a norm layer."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        conv1x1(in_channels, out_channels, stride, bias=norm == "none"),
        make_norm(norm, out_channels, groups),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str, groups: int):
        super().__init__()
        bias = norm == "none"
        self.conv1 = conv3x3(in_channels, channels, stride, bias)
        self.norm1 = make_norm(norm, channels, groups)
        self.conv2 = conv3x3(channels, channels, 1, bias)
        self.norm2 = make_norm(norm, channels, groups)
        self.shortcut = shortcut(in_channels, channels, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, norm: str, groups: int):
        super().__init__()
        bias = norm == "none"
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, channels, 1, bias)
        self.norm1 = make_norm(norm, channels, groups)
        self.conv2 = conv3x3(channels, channels, stride, bias)
        self.norm2 = make_norm(norm, channels, groups)
        self.conv3 = conv1x1(channels, out_channels, 1, bias)
        self.norm3 = make_norm(norm, out_channels, groups)
        self.shortcut = shortcut(in_channels, out_channels, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    fsdp_blocks = (BasicBlock, Bottleneck)  # train.parallel=fsdp: each residual block its own unit

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_stage: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
        norm: str,
        width: int,
        groups: int,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            conv3x3(in_channels, width, 1, bias=norm == "none"),
            make_norm(norm, width, groups),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        channels_in = width
        for stage, (num_blocks, stride) in enumerate(zip(blocks_per_stage, STAGE_STRIDES)):
            channels = width * 2**stage
            blocks = []
            for block_stride in [stride] + [1] * (num_blocks - 1):
                blocks.append(block(channels_in, channels, block_stride, norm, groups))
                channels_in = channels * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x)))
        return self.fc(features.flatten(1))


def resnet18(
    input_shape: tuple[int, int, int], num_classes: int, *, norm: str, width: int = 64, groups: int = 32
) -> ResNet:
    _check_widths(width, groups)
    return ResNet(BasicBlock, (2, 2, 2, 2), input_shape[0], num_classes, norm, width, groups)


def resnet50(
    input_shape: tuple[int, int, int], num_classes: int, *, norm: str, width: int = 64, groups: int = 32
) -> ResNet:
    _check_widths(width, groups)
    return ResNet(Bottleneck, (3, 4, 6, 3), input_shape[0], num_classes, norm, width, groups)


def _check_widths(width: int, groups: int) -> None:
    integer("model.width", width, 1)
    integer("model.groups", groups, 1)
