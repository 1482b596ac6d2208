"""Fully connected models: multinomial logistic regression and a small MLP."""

import math
from collections.abc import Sequence

from torch import nn

from adabatch.checks import is_integer, refuse


def logistic_regression(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(
    input_shape: tuple[int, int, int], num_classes: int, *, hidden: Sequence[int] = (128,)
) -> nn.Sequential:
    """Linear -> ReLU for each width in ``hidden``, then a linear classifier."""
    if not isinstance(hidden, (list, tuple)) or not all(is_integer(h) and h >= 1 for h in hidden):
        refuse("model.hidden", list(hidden) if isinstance(hidden, tuple) else hidden, "a list of integers >= 1")
    widths = [math.prod(input_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)
