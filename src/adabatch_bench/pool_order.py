"""The paper's MNIST CNN's plain training step, its blocks pooled before the ReLU (as shipped) and after it.

    .venv/bin/python -m adabatch_bench.pool_order                 # b = 1024 on 28x28 images, one thread
    .venv/bin/python -m adabatch_bench.pool_order --threads 2 --size 256

Both models hold the same weights, and the script first checks that they give the same loss and gradients
to the last bit (models/cnn.py's conv_block says why they must). A round then times one forward and
backward of each, in alternating order; the ratio is the median over rounds.
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from adabatch.device import describe
from adabatch.models import build_model
from adabatch_bench.turns import median_ratio


def relu_before_pool(model: nn.Sequential) -> nn.Sequential:
    """A copy of `model` with every max-pool, ReLU pair swapped."""
    layers = list(copy.deepcopy(model))
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layer
    return nn.Sequential(*layers)


def step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """The loss and the gradient of every parameter."""
    loss = nn.functional.cross_entropy(model(images), labels)
    return [loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="examples in the batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (reproduce-cpu runs use one)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shipped = build_model("cnn", (1, 28, 28), 10)
    textbook = relu_before_pool(shipped)
    images, labels = torch.randn(args.size, 1, 28, 28).clamp_min(0), torch.randint(0, 10, (args.size,))
    if not all(map(torch.equal, step(shipped, images, labels), step(textbook, images, labels))):
        raise SystemExit("the two orders gave different gradients")

    ratio = median_ratio(lambda: step(shipped, images, labels), lambda: step(textbook, images, labels), args.rounds)
    print(f"{describe(torch.device('cpu'))}, {args.threads} thread(s), b={args.size}: the CNN's step with "
          f"conv, ReLU, pool blocks takes {ratio:.2f}x the time of conv, pool, ReLU "
          f"(median of {args.rounds} rounds; gradients identical)")


if __name__ == "__main__":
    main()
