"""Normalization-layer policy for convolutional models.

GroupNorm is the default because it normalizes each example on its own, so
per-example gradients are well defined; BatchNorm couples the examples of a
batch and is kept only for comparison runs.
"""

from torch import nn

NORM_POLICIES = ("group", "batch", "none")


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that does not exceed ``limit``."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def make_norm(policy: str, channels: int, groups: int = 32) -> nn.Module:
    """A 2-d normalization layer over ``channels`` feature maps.

    For ``"group"`` the number of groups is the largest divisor of ``channels``
    not above ``groups``, so narrow test models still get a valid GroupNorm.
    """
    if policy == "group":
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        return nn.GroupNorm(largest_divisor_at_most(channels, groups), channels)
    if policy == "batch":
        return nn.BatchNorm2d(channels)
    if policy == "none":
        return nn.Identity()
    raise ValueError(f"model.norm={policy!r} is unknown; choose one of {', '.join(NORM_POLICIES)}")


NORMALIZATIONS = {"batch": nn.modules.batchnorm._BatchNorm, "group": nn.GroupNorm, "layer": nn.LayerNorm}


def normalization_of(model: nn.Module) -> str:
    """What `model` normalizes with ("batch", "group", "layer", joined by "+" when several; "none"):
    model.norm is a policy only the ResNets follow, so a run's summary records the layers themselves."""
    found = [name for name, kind in NORMALIZATIONS.items() if any(isinstance(m, kind) for m in model.modules())]
    return "+".join(found) or "none"
