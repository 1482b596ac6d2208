"""The paper's MNIST CNN with its weights contiguous (the default) and channels last (train.memory_format).

    .venv/bin/python -m adabatch_bench.memory_format                 # one thread, as reproduce-cpu runs
    .venv/bin/python -m adabatch_bench.memory_format --threads 2 --size 256

Both models hold the same weights. The script first checks that they give the same loss, gradient and
test statistics up to float32 rounding (the layout changes the convolutions' order of summation, not what
they sum), then times, in alternating order, what a run does: plain steps at b = 8 and at b = 1024
(--size), an evaluation's forward pass and tested steps at that size with the ghost engine (the norm
test's statistics, and the inner products the augmented test adds). Each ratio is the median over rounds.
"""
from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
from torch import nn

from adabatch.data import ArrayDataset, TrainingData, build_augmentation
from adabatch.device import describe
from adabatch.models import build_model
from adabatch.stats import Needs, build_engine, gradient_with_statistics
from adabatch.step import accumulate_gradient
from adabatch_bench.turns import median_ratio

SHAPE = (1, 28, 28)


def random_images(size: int) -> TrainingData:
    """Fashion-MNIST-shaped uint8 images with random labels (the timing does not depend on the values):
    enough for a batch of 8 and one of `size`."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (size + 8, *SHAPE), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (size + 8,), generator=g)
    dataset = ArrayDataset("random", images, labels, images[:size], labels[:size], 10, 255.0, (0.5,), (0.25,))
    return TrainingData(dataset, build_augmentation("none"), seed=0, device=torch.device("cpu"))


def workloads(model: nn.Module, data: TrainingData, size: int) -> dict[str, Callable[[], list[torch.Tensor]]]:
    """Each of a run's kinds of work on `model`, at b = 8 and b = `size`: a callable returning what it computed."""
    small, large = data.draw(8), data.draw(size)
    test_x = data.examples(large)[0]
    engine = build_engine("ghost", model)

    def plain(batch):
        def run():
            model.zero_grad(set_to_none=True)
            loss = accumulate_gradient(model, data, batch, max_micro=size)
            return [torch.as_tensor(loss), *(p.grad for p in model.parameters())]
        return run

    def tested(needs: Needs):
        def run():
            model.zero_grad(set_to_none=True)
            loss, s = gradient_with_statistics(engine, data, large, size, needs)
            values = [s.grad_sq_norm, s.norm_var] + ([s.ip_var, s.orth_var] if needs.inner_products else [])
            return [torch.as_tensor(loss), *map(torch.as_tensor, values), *(p.grad for p in model.parameters())]
        return run

    def evaluation():
        with torch.no_grad():
            return [model(test_x)]

    return {"plain step, b = 8": plain(small), f"plain step, b = {size}": plain(large),
            f"evaluation, {size} examples": evaluation, f"norm test's step, b = {size}": tested(Needs()),
            f"augmented test's step, b = {size}": tested(Needs(inner_products=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (reproduce-cpu runs use one)")
    parser.add_argument("--size", type=int, default=1024, help="the larger batch (reproduce-cpu's micro-batch cap)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    contiguous = build_model("cnn", SHAPE, 10)
    channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    layouts = {"contiguous": workloads(contiguous, random_images(args.size), args.size),
               "channels_last": workloads(channels_last, random_images(args.size), args.size)}
    print(f"{describe(torch.device('cpu'))}, {args.threads} thread(s): time with channels-last weights / with "
          f"contiguous ones (median of {args.rounds} rounds)")
    for name in layouts["contiguous"]:
        for a, b in zip(layouts["contiguous"][name](), layouts["channels_last"][name]()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6 * float(a.abs().max()), msg=f"{name}: layouts disagree")
        ratio = median_ratio(layouts["contiguous"][name], layouts["channels_last"][name], args.rounds)
        print(f"  {name:32s} {ratio:.2f}")


if __name__ == "__main__":
    main()
