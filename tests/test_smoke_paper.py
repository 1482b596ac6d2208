"""The fast subset of make smoke-paper: per model family, a paper run's plain and tested steps of
2, 4 and 8 micro-batches at the true example shapes (stand-in pixels), with its optimizer and test."""
from __future__ import annotations

import pytest
from helpers import ROOT, compose

from adabatch.data.standin import write_standin_dataset
from adabatch_bench.smoke import MEMORY_GROWTH_ALLOWED, MICRO_BATCHES, smoke_run
from adabatch_bench.smoke_paper import SUBSET, overrides, paper_run_ids


MICRO = 1  # steps of 2, 4 and 8 examples: seconds for ResNet-50
LEAK_MICRO = 4  # a copy of each micro-batch's inputs left behind then adds 4-6% to the peak (2% allowed)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    for name in ("mnist", "cifar10", "cifar100"):
        write_standin_dataset(name, root, train=64, test=8)
    return root


def test_the_subset_covers_every_model_family_of_make_reproduce():
    runs = paper_run_ids()
    assert len(runs) == len(set(runs)) == 39 and set(SUBSET) <= set(runs)
    models = {compose(*overrides(run, ROOT, "cpu", 1)).model.name for run in runs}
    assert models == {compose(*overrides(run, ROOT, "cpu", 1)).model.name for run in SUBSET}


@pytest.mark.parametrize("run", SUBSET)
def test_a_paper_run_takes_split_plain_and_tested_steps_at_its_true_shapes(run, data_dir):
    cfg = compose(*overrides(run, data_dir, "cpu", MICRO))
    result = smoke_run(run, cfg, MICRO, first_step=False)
    assert result.problems == []
    for kind in (result.plain, result.tested):
        assert sorted(kind.peak_bytes) == [n * MICRO for n in MICRO_BATCHES] and min(kind.peak_bytes.values()) > 0
        assert kind.growth <= MEMORY_GROWTH_ALLOWED and kind.seconds_per_example > 0
    # a tested step holds the plain step's activations and more: the statistics' buffers
    assert result.tested.peak_bytes[2 * MICRO] >= result.plain.peak_bytes[2 * MICRO]



def test_a_step_that_keeps_something_per_example_fails_the_memory_check(data_dir, monkeypatch):
    """A defect of the kind the check is for: each micro-batch leaves a copy of its inputs behind."""
    from adabatch import AdaptiveBatch

    kept = []

    def leaky_gradient(self, data, batch, tested):
        for part in batch.split(self.max_micro):
            kept.append(data.examples(part)[0].clone())
        return gradient(self, data, batch, tested)

    gradient = AdaptiveBatch.gradient
    monkeypatch.setattr(AdaptiveBatch, "gradient", leaky_gradient)
    run = "mnist_cnn/norm_test-adagrad"
    result = smoke_run(run, compose(*overrides(run, data_dir, "cpu", LEAK_MICRO)), LEAK_MICRO, first_step=False)
    grown = [problem.split(":")[0] for problem in result.problems if "grows with the batch" in problem]
    assert grown == ["plain steps", "tested steps"], result.problems
