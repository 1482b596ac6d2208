"""Fully connected models: multinomial logistic regression and a small MLP."""

import math
from collections.abc import Sequence

from torch import nn


def logistic_regression(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(
    input_shape: tuple[int, int, int], num_classes: int, *, hidden: Sequence[int] = (128,)
) -> nn.Sequential:
    """Linear -> ReLU for each width in ``hidden``, then a linear classifier."""
    widths = [math.prod(input_shape), *(int(h) for h in hidden)]
    if any(w < 1 for w in widths[1:]):
        raise ValueError(f"hidden widths must be positive, got {tuple(hidden)}")
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)
