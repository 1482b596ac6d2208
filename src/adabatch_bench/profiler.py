"""Where a ghost tested step spends its time, layer by layer, next to what autograd spends on the same
layer's weight gradient in a plain step.

    .venv/bin/python -m adabatch_bench.profiler --model cnn --test norm
    .venv/bin/python -m adabatch_bench.profiler --model resnet18 --test inner_product --size 128 --rounds 5
    .venv/bin/python -m adabatch_bench.profiler --model vit --engine ghost_measured   # forms timed in the warm-up
    .venv/bin/python -m adabatch_bench.profiler --model gpt --test norm   # results/bench/gpt/profiler_norm.md

The models and inputs are `adabatch_bench.bench`'s (the configs' models on random CIFAR-sized images,
the GPT on its 32 random windows). A plain step, a tested step and the ghost pass with every rule
skipped (the forward and the activation gradients, which both steps compute) take turns for `--rounds`
rounds after a warm-up; each time is the median over rounds. Per layer with parameters: the rule's time
in its output-gradient hook (the layer's batch gradient and statistics, what replaces autograd's weight
gradient in a ghost pass); for a formed dense layer, its per-example gradients alone, formed chunk by
chunk as the rule forms them but with no sums; the time of autograd's weight gradient alone
(`weight_gradient` on the layer's own input and output gradient; none for normalization layers, whose
rules form their small per-example gradients); and which form the rule took: "outer" (one position),
"gram", "formed" (per-example gradients; "kept" for the inner products), and for a convolution,
"grouped" or "patches" (formed), "offsets" or "patches" (gram: its input Gram matrices from shifted
channel products or from patches). The rules are timed in their hooks, within the pass; forming alone
and autograd's weight gradient after the rounds, on warm caches. The last line compares the two steps'
work within the pass: what each takes beyond the skipped-rules pass, round by round.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import defaultdict

import torch

from adabatch.components import shipped
from adabatch.device import describe
from adabatch.stats import build_engine, gradient_with_statistics
from adabatch.stats.ghost import DenseRule, LayerCall
from adabatch.stats.sums import GradientSums, Needs
from adabatch.step import accumulate_gradient
from adabatch.tasks import task_of
from adabatch_bench.bench import FIXED_SIZES, MODELS, TESTS, build_config_model, random_cifar, random_windows


class LayerClock:
    """Times each rule in its hook (the engine's `layer_hook`) and keeps each layer's first call (input,
    output gradient, budget), to time autograd's weight gradient on them afterwards. While `skip_rules`
    is set, the hooks run no rule: the pass is the forward and the activation gradients."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.captured: dict[str, LayerCall] = {}
        self.skip_rules = False

    def __enter__(self) -> LayerClock:
        self.engine.layer_hook = self.timed
        return self

    def __exit__(self, *exc) -> None:
        self.engine.layer_hook = None

    def timed(self, call: LayerCall, run) -> None:
        if self.skip_rules:
            return
        if call.name not in self.captured:
            self.captured[call.name] = LayerCall(call.name, call.rule, call.a.clone(), call.delta.clone(), call.budget,
                                                 call.keep, call.coordinates, call.second_phase)
        start = time.perf_counter()
        run()
        self.seconds[call.name].append(time.perf_counter() - start)


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


def form_of(call: LayerCall) -> tuple[str, str]:
    """(the rule's form, the layer's shape as T x d_in -> d_out) for a dense rule; else ("formed", "")."""
    rule = call.rule
    if not isinstance(rule, DenseRule):
        return "formed", ""
    n, positions, d_out = rule.output_rows(call.delta).shape
    d_in = rule.module.weight[0].numel()
    return rule.form_label(call.a, call.delta, call.coordinates, call.keep, call.budget), f"{positions} x {d_in} -> {d_out}"


def forming_ms(call: LayerCall, form: str, rounds: int) -> float | None:
    """A formed dense layer's per-example gradients alone, chunk by chunk as its rule forms them (patches
    included, no sums): the batched matmuls that forming cannot do without."""
    if not (isinstance(call.rule, DenseRule) and form.startswith("formed")):
        return None
    return time_ms(lambda: call.rule.form_in_chunks(call.a, call.delta, call.budget), rounds)


def activations_only(engine, data, batch, clock: LayerClock) -> None:
    """The ghost pass with every rule skipped: the forward and the activation gradients, which a plain
    step computes too."""
    x, y = data.examples(batch)
    clock.skip_rules = True
    try:
        engine.first_phase(x, y, GradientSums(engine.params, Needs()), None, keep=False)
    finally:
        clock.skip_rules = False


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
    if args.model in FIXED_SIZES:
        args.size = FIXED_SIZES[args.model]
    data = random_windows(model, args.size, device) if args.model == "gpt" else random_cifar(args.size, device)
    loss = task_of(data.dataset).loss  # classification, or next-token over the GPT's windows
    engine = build_engine(args.engine, copy.deepcopy(model), loss=loss)
    batch, needs = data.draw(args.size), shipped("batch_size", args.test).needs
    plain, tested, bare = [], [], []
    with LayerClock(engine) as clock:
        for round_ in range(1 + args.rounds):  # round 0 warms up
            for step, times in ((lambda: accumulate_gradient(model, data, batch, args.size, None, loss=loss), plain),
                                (lambda: gradient_with_statistics(engine, data, batch, args.size, needs), tested),
                                (lambda: activations_only(engine, data, batch, clock), bare)):
                model.zero_grad(set_to_none=True)
                engine.model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
    plain_ms, tested_ms, bare_ms = median_ms(plain[1:]), median_ms(tested[1:]), median_ms(bare[1:])

    print(f"{args.model}, {args.test}, {args.engine}, b = {args.size}, on {describe(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} rounds")
    print(f"plain step {plain_ms:.1f} ms, tested step {tested_ms:.1f} ms ({tested_ms / plain_ms:.2f}x)\n")
    print("| layer | T x d_in -> d_out | form | rule in its hook (ms) | forming alone (ms) "
          "| autograd's weight gradient (ms) | difference (ms) |")
    print("|---|---|---|---|---|---|---|")
    total_rule = total_weight = total_forming = formed_rules = 0.0
    for name, samples in clock.seconds.items():
        call = clock.captured[name]
        rule = call.rule
        rule_ms = median_ms(samples[len(samples) // (1 + args.rounds):])  # after the warm-up round
        form, shape = form_of(call)
        weight_ms = (time_ms(lambda: rule.weight_gradient(call.a, call.delta), args.rounds)
                     if isinstance(rule, DenseRule) else 0.0)
        alone = forming_ms(call, form, args.rounds)
        total_rule, total_weight = total_rule + rule_ms, total_weight + weight_ms
        if alone is not None:
            total_forming, formed_rules = total_forming + alone, formed_rules + rule_ms
        print(f"| {name} ({type(rule.module).__name__}) | {shape} | {form} | {rule_ms:.2f} | "
              f"{'' if alone is None else f'{alone:.2f}'} | {weight_ms:.2f} | {rule_ms - weight_ms:+.2f} |")
    print(f"| all layers | | | {total_rule:.1f} | {total_forming:.1f} | {total_weight:.1f} | {total_rule - total_weight:+.1f} |")
    print(f"\nThe tested step adds {tested_ms - plain_ms:.1f} ms to the plain step; the rules add "
          f"{total_rule - total_weight:.1f} ms over autograd's weight gradients. Forming the per-example gradients "
          f"alone takes {total_forming:.1f} ms of the formed layers' {formed_rules:.1f} ms in their hooks.")
    # Per round, so that the machine's drift between rounds cancels in each difference
    weights_in_pass = median_ms([p - b for p, b in zip(plain[1:], bare[1:])])
    rules_in_pass = median_ms([t - b for t, b in zip(tested[1:], bare[1:])])
    print(f"In the pass itself: the forward and activation gradients alone (the ghost pass with every rule "
          f"skipped) take {bare_ms:.1f} ms, so autograd's weight gradients take {weights_in_pass:.1f} ms of the plain "
          f"step and the rules {rules_in_pass:.1f} ms of the tested step ({rules_in_pass / weights_in_pass:.2f}x). "
          f"At 1.2x a plain step the rules would have {weights_in_pass + 0.2 * plain_ms:.1f} ms.")


if __name__ == "__main__":
    main()
