"""train.precision=bf16 and train.compile=true on the CPU: bf16 is torch's CPU autocast, for plain and
tested steps alike, with the tests' statistics still float64 sums; compile runs the untested steps
through inductor while the tested steps stay eager on the bare model. The quickstart is trained both
ways, and one step is compared with its fp32 / eager counterpart at fixed weights and batch."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import compose

from adabatch import adaptive_batch
from adabatch.run import loop as training
from adabatch.data import TrainingData, build_augmentation
from adabatch.data.from_config import dataset_from_config
from adabatch.device import autocast
from adabatch.models import model_from_config
from adabatch.run.records import read_metrics
from adabatch.stats import ENGINES, Needs, build_engine, gradient_with_statistics
from adabatch.step import accumulate_gradient
from adabatch.validation import plain

CPU = torch.device("cpu")
QUICKSTART = ("experiment=quickstart", "device=cpu", "train.progress_every_s=0", "train.save_model=false")
BUDGET = "train.samples=20000"  # a third of the quickstart: the batch reaches its cap of 512, then untested steps
SCALARS = ("grad_sq_norm", "norm_var", "ip_var", "orth_var")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The quickstart on a reduced budget with extra overrides: (summary, train records), run once each."""
    runs = {}

    def run(*overrides: str):
        if overrides not in runs:
            run_dir = tmp_path_factory.mktemp("run")
            summary = training.train(compose(*QUICKSTART, BUDGET, *overrides), run_dir)
            runs[overrides] = summary, list(read_metrics(run_dir, "train"))
        return runs[overrides]

    return run


def quickstart_problem(seed: int = 0):
    """The quickstart's model (freshly initialized) and data stream, on the CPU."""
    cfg = compose(*QUICKSTART)
    dataset = dataset_from_config(plain(cfg.dataset), cfg.data_dir)
    data = TrainingData(dataset, build_augmentation(cfg.dataset.augmentation), seed, CPU)
    torch.manual_seed(seed)
    model = model_from_config(plain(cfg.model), dataset.input_shape, dataset.num_classes)
    return model, data


def test_bf16_quickstart_learns_as_fp32_does_with_finite_float64_statistics(quickstart):
    fp32, fp32_records = quickstart()
    bf16, records = quickstart("train.precision=bf16")
    assert bf16["status"] == "completed"
    assert bf16["final_test_acc"] >= 0.9 and bf16["final_test_acc"] >= fp32["final_test_acc"] - 0.03, (bf16, fp32)
    tested = [r for r in records if r.get("tested")]
    assert len(tested) >= 20 and len(tested) < len(records)  # the batch grew to its cap; then untested steps
    for record in tested:
        statistics = [record.get(k) for k in ("grad_sq_norm", "norm_var", "proposal", "test_lhs", "test_rhs")]
        assert all(isinstance(v, float) and math.isfinite(v) for v in statistics), record
    # Step 1 of both runs: the same initial weights and batch, so the statistics differ by bf16's rounding only.
    first, first_fp32 = records[0], fp32_records[0]
    assert first["batch_size"] == first_fp32["batch_size"]
    assert first["train_loss"] != first_fp32["train_loss"]  # autocast ran
    for key in ("grad_sq_norm", "norm_var"):
        assert first[key] == pytest.approx(first_fp32[key], rel=2e-2), key


NEEDS = {"norm": Needs(), "inner_products": Needs(inner_products=True), "coordinates": Needs(coordinates=True)}


@pytest.mark.parametrize("splits", (1, 3))
@pytest.mark.parametrize("needs", NEEDS)
@pytest.mark.parametrize("engine_name", ENGINES)
def test_bf16_tested_step_statistics_are_float64_and_close_to_fp32(engine_name, needs, splits):
    """At fixed weights and batch, a bf16 tested step's statistics are fp32's up to bf16's rounding.
    Measured on these 64 examples (all engines, unsplit and split): the scalar statistics at most 0.33%
    apart (grad_sq_norm and ip_var; norm_var and orth_var 0.07%), the per-coordinate variances 0.65%
    (relative norm); on 16 examples 0.6% and 1.1%. The statistics are float64 sums either way."""
    batch_size = 64
    model, data = quickstart_problem()
    accumulate_gradient(model, data, data.draw(batch_size), batch_size, autocast(CPU, "bf16"))
    plain16 = [p.grad for p in model.parameters()]  # a plain bf16 step's gradient, of the same weights and batch
    results = {}
    for precision in ("fp32", "bf16"):
        model, data = quickstart_problem()
        batch = data.draw(batch_size)
        seen = set()  # the dtype of the last layer's output: bf16 when autocast ran
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        loss, statistics = gradient_with_statistics(
            build_engine(engine_name, model), data, batch, math.ceil(batch_size / splits), NEEDS[needs],
            autocast=autocast(CPU, precision),
        )
        results[precision] = loss.item(), statistics, [p.grad for p in model.parameters()], seen
    loss32, s32, grads32, seen32 = results["fp32"]
    loss16, s16, grads16, seen16 = results["bf16"]
    assert seen32 == {torch.float32} and seen16 == {torch.bfloat16}
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=1e-3)
    assert s16.is_finite()
    assert all(g.dtype == torch.float32 for g in grads16)  # the step's gradient, in the parameters' dtype
    flat = lambda tensors: torch.cat([t.flatten() for t in tensors])  # noqa: E731
    # bf16 moves the gradient by 5% (max pooling and ReLU see rounded activations), a plain step's as much;
    # the tested step's is the plain bf16 step's to 0.25%.
    assert (flat(grads16) - flat(plain16)).norm() <= 1e-2 * flat(plain16).norm()
    assert (flat(grads16) - flat(grads32)).norm() <= 0.1 * flat(grads32).norm()
    scalars = [k for k in SCALARS if getattr(s32, k) is not None]
    assert len(scalars) == (4 if needs == "inner_products" else 2)
    assert all(getattr(s16, k) != getattr(s32, k) for k in scalars)  # bf16 rounding reached the statistics
    for key in scalars:
        assert getattr(s16, key) == pytest.approx(getattr(s32, key), rel=2e-2), key
    if needs == "coordinates":
        assert all(v.dtype == torch.float64 for v in [*s16.coord_var, *s16.mean_grad])  # float64 sums
        assert (flat(s16.coord_var) - flat(s32.coord_var)).norm() <= 5e-2 * flat(s32.coord_var).norm()


@pytest.fixture
def fresh_dynamo():
    """Dynamo keeps compiled code on the code objects it compiled (nn.Sequential.forward here), for any
    module of the same structure and up to a limit of recompilations: start and leave with none."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_untested_steps_match_eager_ones(fresh_dynamo):
    """accumulate_gradient through torch.compile (inductor, CPU) and through the model: the same
    gradients, for an unsplit batch of the quickstart's cap (512, the shape its compiled steps see), a
    batch split into micro-batches of two sizes (a recompilation, with dynamic shapes), and another
    batch size (the dynamic graph)."""
    model, data = quickstart_problem()
    compiled = torch.compile(model)
    for batch_size, max_micro in ((512, 1024), (100, 40), (72, 72)):
        batch = data.draw(batch_size)
        results = []
        for step_model in (model, compiled):
            model.zero_grad(set_to_none=True)
            loss = accumulate_gradient(step_model, data, batch, max_micro)
            results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
        (eager_loss, eager), (compiled_loss, grads) = results
        assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
        for g, e in zip(grads, eager):
            assert (g - e).abs().max() <= 1e-4 * e.abs().max(), (batch_size, max_micro)


def test_compiled_quickstart_learns_with_eager_tested_steps(quickstart, fresh_dynamo, monkeypatch):
    """train.compile=true: every untested step runs the inductor-compiled model, no tested step does (the
    engine holds the bare model), and the run learns as the eager one does."""
    from torch._inductor.compile_fx import compile_fx

    plain_models, engine_models, graphs, graph_runs = [], [], [], []
    real_compile = torch.compile

    def counting_compile(model, **options):  # the "inductor" backend (compile_fx), counting graphs and runs
        assert not options  # training asks for the defaults

        def inductor(graph, example_inputs):
            graphs.append(graph)
            compiled = compile_fx(graph, example_inputs)

            def run(*args):
                graph_runs.append(graph)
                return compiled(*args)

            return run

        return real_compile(model, backend=inductor)

    def plain_step(model, *args, **kwargs):
        plain_models.append(model)
        return accumulate_gradient(model, *args, **kwargs)

    def tested_step(engine, *args, **kwargs):
        engine_models.append(engine.model)
        return gradient_with_statistics(engine, *args, **kwargs)

    eager, eager_records = quickstart()
    monkeypatch.setattr(torch, "compile", counting_compile)
    monkeypatch.setattr(adaptive_batch, "accumulate_gradient", plain_step)  # what training steps through
    monkeypatch.setattr(adaptive_batch, "gradient_with_statistics", tested_step)
    summary, records = quickstart("train.compile=true")
    assert summary["status"] == "completed"
    assert summary["final_test_acc"] >= 0.9 and abs(summary["final_test_acc"] - eager["final_test_acc"]) <= 0.03

    tested = [r.get("tested", False) for r in records]
    assert len(engine_models) == sum(tested) >= 20 and len(plain_models) == len(records) - sum(tested) >= 5
    bare = engine_models[0]
    assert all(m is bare for m in engine_models) and not isinstance(bare, torch._dynamo.eval_frame.OptimizedModule)
    assert all(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) and m._orig_mod is bare for m in plain_models)
    # One forward graph (the batch stays at its cap of 512, one micro-batch), run once per untested step.
    assert len(graphs) == 1 and len(graph_runs) == len(plain_models)
    # The eager tested steps are the eager run's, bit for bit, up to the first compiled step, whose loss
    # (the same weights and batch) is the eager one's up to inductor's rounding.
    first_plain = tested.index(False)
    keys = ("batch_size", "train_loss", "grad_sq_norm", "norm_var")
    before = lambda runs: [[r.get(k) for k in keys] for r in runs[:first_plain]]  # noqa: E731
    assert before(records) == before(eager_records)
    assert not eager_records[first_plain].get("tested")
    assert records[first_plain]["train_loss"] == pytest.approx(eager_records[first_plain]["train_loss"], rel=1e-5)


class ExactRows:
    """float32 examples whose gradients under `linear_loss` are the examples themselves, exactly: large
    values (1024 + k/2) that vary little, so that Σ‖g_i‖² cancels against b‖ḡ‖² in the variance. They
    have 12 significant bits, so their squares too are exact in float32 (the engines square in the
    model's dtype): only where the squares are summed decides."""

    def __init__(self, b: int = 512, width: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = 1024 + torch.randint(-8, 9, (b, width), generator=g).float() / 2
        self.y = torch.ones(b)

    def examples(self, batch):
        return self.x[batch.indices], self.y[batch.indices]


def linear_loss(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (outputs.squeeze(-1) * y).sum()  # dL_i/dW = x_i, dL_i/db = 1: exact in float32


@pytest.mark.parametrize("max_micro", [512, 128])
@pytest.mark.parametrize("engine_name", ["functorch", "opacus"])
def test_a_float32_models_squared_norms_are_summed_in_float64(engine_name, max_micro):
    """GradientSums promises float64 sums whatever the model's dtype. Here the float32 sum of the
    squares (about 8.6e9, in steps of 1024) would be off by thousands: a visible share of the variance."""
    from adabatch.data import Batch

    data = ExactRows()
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 1)
    assert model.weight.dtype == torch.float32
    g = torch.cat([data.x.double(), torch.ones(len(data.x), 1, dtype=torch.float64)], 1)  # the exact gradients
    gbar, b = g.mean(0), len(g)
    engine = build_engine(engine_name, model, loss=linear_loss)
    _, s = gradient_with_statistics(engine, data, Batch(torch.arange(b), None), max_micro,
                                    Needs(inner_products=True, coordinates=True))
    assert s.norm_var == pytest.approx(float(((g - gbar) ** 2).sum() / (b - 1)), rel=1e-9)
    assert s.ip_var == pytest.approx(float((g @ gbar).var()), rel=1e-6)
    coord_var = torch.cat([v.flatten() for v in s.coord_var])
    torch.testing.assert_close(coord_var, g.var(0), rtol=1e-9, atol=1e-12)
    # the premise: summed in float32, the squares miss Σ‖g_i - ḡ‖² by more than a thousandth of it
    in_float32 = (g.float() ** 2).sum().double() - b * (gbar**2).sum()
    assert abs(float(in_float32 - ((g - gbar) ** 2).sum())) > 1e-3 * float(((g - gbar) ** 2).sum())
