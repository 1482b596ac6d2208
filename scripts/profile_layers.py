"""Where a ghost tested step spends its time, layer by layer, next to what autograd spends on the same
layer's weight gradient in a plain step.

    .venv/bin/python scripts/profile_layers.py --model cnn --test norm
    .venv/bin/python scripts/profile_layers.py --model resnet18 --test inner_product --size 128 --rounds 5
    .venv/bin/python scripts/profile_layers.py --model vit --engine ghost_measured   # forms timed in the warm-up

The models and inputs are `scripts/bench_stats.py`'s (the configs' models on random CIFAR-sized
images). A plain step and a tested step take turns for `--rounds` rounds after a warm-up; each time is
the median over rounds. Per layer with parameters: the rule's time in its output-gradient hook (the
layer's batch gradient and statistics, what replaces autograd's weight gradient in a ghost pass), the
time of that weight gradient alone as autograd computes it (`weight_gradient` on the layer's own input
and output gradient; none for normalization layers, whose rules form their small per-example
gradients), and which form the rule took: "outer" (one position), "gram", "formed" (per-example
gradients; "kept" for the inner products), and for a convolution, "grouped" or "patches" (formed),
"offsets" or "patches" (gram: its input Gram matrices from shifted channel products or from patches).
The difference of the two sums is most of what the tested step adds; the rest is the hooks' own cost.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from adabatch.batch_size import POLICY_CLASSES  # noqa: E402
from adabatch.device import describe  # noqa: E402
from adabatch.stats import build_engine, gradient_with_statistics  # noqa: E402
from adabatch.stats.ghost import Capture  # noqa: E402
from adabatch.stats.layers import Conv2dRule, DenseRule, transient_budget  # noqa: E402
from adabatch.step import accumulate_gradient  # noqa: E402
from bench_stats import MODELS, TESTS, build_config_model, random_cifar  # noqa: E402


class LayerClock:
    """Times each rule in its hook (wrapping Capture.on_output_grad) and keeps each layer's first
    input and output gradient, to time autograd's weight gradient on them afterwards."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.captured: dict[str, tuple] = {}
        self.original = Capture.on_output_grad

    def __enter__(self) -> LayerClock:
        clock = self

        def timed(capture: Capture, module, delta):
            name = capture.engine.names[module]
            if name not in clock.captured:
                a = capture.inputs[module][0]
                clock.captured[name] = (capture.engine.rules[module], a.detach().clone(), delta.detach().clone(),
                                        transient_budget(capture.input_elements), capture.keep,
                                        capture.sums.coord_sq is not None)
            start = time.perf_counter()
            clock.original(capture, module, delta)
            clock.seconds[name].append(time.perf_counter() - start)

        Capture.on_output_grad = timed
        return self

    def __exit__(self, *exc) -> None:
        Capture.on_output_grad = self.original


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def time_ms(step, rounds: int) -> float:
    step()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def form_of(rule, a, delta, coordinates, keep, budget) -> tuple[str, str]:
    """(the rule's form, the layer's shape as T x d_in -> d_out) for a dense rule; else ("formed", "")."""
    if not isinstance(rule, DenseRule):
        return "formed", ""
    rows = rule.output_rows(delta)
    n, positions, d_out = rows.shape
    d_in = rule.module.weight[0].numel()
    form = rule.weight_form(n, positions, coordinates, keep, budget)
    if form.startswith("formed") and isinstance(rule, Conv2dRule):
        form += ", patches" if rule.forms_from_patches(a, delta) else ", grouped"
    if form == "gram" and isinstance(rule, Conv2dRule):
        form += ", offsets" if rule.grams_by_offsets(a) else ", patches"
    return form, f"{positions} x {d_in} -> {d_out}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="cnn")
    parser.add_argument("--test", choices=TESTS, default="norm")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--engine", choices=("ghost", "ghost_measured"), default="ghost",
                        help="ghost_measured: the forms timed in the warm-up round")
    args = parser.parse_args()

    device = torch.device("cpu")
    model = build_config_model(args.model)
    engine = build_engine(args.engine, copy.deepcopy(model))
    data = random_cifar(args.size, device)
    batch, needs = data.draw(args.size), POLICY_CLASSES[args.test].needs
    plain, tested = [], []
    with LayerClock() as clock:
        for round_ in range(1 + args.rounds):  # round 0 warms up
            for step, times in ((lambda: accumulate_gradient(model, data, batch, args.size, None), plain),
                                (lambda: gradient_with_statistics(engine, data, batch, args.size, needs), tested)):
                model.zero_grad(set_to_none=True)
                engine.model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
    plain_ms, tested_ms = median_ms(plain[1:]), median_ms(tested[1:])

    print(f"{args.model}, {args.test}, {args.engine}, b = {args.size}, on {describe(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} rounds")
    print(f"plain step {plain_ms:.1f} ms, tested step {tested_ms:.1f} ms ({tested_ms / plain_ms:.2f}x)\n")
    print("| layer | T x d_in -> d_out | form | rule in its hook (ms) | autograd's weight gradient (ms) | difference (ms) |")
    print("|---|---|---|---|---|---|")
    total_rule = total_weight = 0.0
    for name, samples in clock.seconds.items():
        rule, a, delta, budget, keep, coordinates = clock.captured[name]
        rule_ms = median_ms(samples[len(samples) // (1 + args.rounds):])  # after the warm-up round
        form, shape = form_of(rule, a, delta, coordinates, keep, budget)
        weight_ms = time_ms(lambda: rule.weight_gradient(a, delta), args.rounds) if isinstance(rule, DenseRule) else 0.0
        total_rule, total_weight = total_rule + rule_ms, total_weight + weight_ms
        print(f"| {name} ({type(rule.module).__name__}) | {shape} | {form} | {rule_ms:.2f} | {weight_ms:.2f} | {rule_ms - weight_ms:+.2f} |")
    print(f"| all layers | | | {total_rule:.1f} | {total_weight:.1f} | {total_rule - total_weight:+.1f} |")
    print(f"\nThe tested step adds {tested_ms - plain_ms:.1f} ms to the plain step; the rules add "
          f"{total_rule - total_weight:.1f} ms over autograd's weight gradients.")


if __name__ == "__main__":
    main()
