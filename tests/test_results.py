"""The committed results regenerate from the committed run records, byte for byte: the CPU reproduction
(results/cpu) and the learning-rate study (results/lr_study: its tables, the choice and the comparison)."""
import json

import pytest
from helpers import ROOT

from adabatch.analysis import group_runs, load_runs
from adabatch.analysis.lr_choice import choose_rates
from adabatch.analysis.tables import write_frontier_tables, write_tables

TABLES = ("table.csv", "table.md", "frontier.csv", "frontier.md")
LR_STUDY = ROOT / "results" / "lr_study"


@pytest.mark.parametrize("suite", ["cpu", "lr_study"])
def test_committed_tables_regenerate_from_committed_records(tmp_path, suite):
    results = ROOT / "results" / suite
    experiments = group_runs(load_runs([results / "runs"]))
    assert sorted(experiment.slug for experiment in experiments) == sorted(
        path.parent.name for path in results.glob("*/table.md")
    )
    for experiment in experiments:
        assert all(method.completed and not method.incomplete for method in experiment.methods)
        out = tmp_path / experiment.slug
        written = [*write_tables(experiment, out), *write_frontier_tables(experiment, out)]
        assert sorted(path.name for path in written) == sorted(TABLES)
        for name in TABLES:
            assert (out / name).read_bytes() == (results / experiment.slug / name).read_bytes(), (experiment.slug, name)


def test_the_committed_learning_rate_choice_and_comparison_regenerate(tmp_path):
    from adabatch.analysis.lr_comparison import write_comparison

    chosen = json.loads((LR_STUDY / "chosen_lr.json").read_text())
    assert choose_rates(LR_STUDY / "runs" / "fashion_logistic_lr_grid") == chosen
    write_comparison(LR_STUDY / "runs" / "fashion_logistic_lr_grid", LR_STUDY / "runs" / "fashion_logistic_lr_chosen",
                     chosen, "0.008", tmp_path)
    assert (tmp_path / "comparison.md").read_bytes() == (LR_STUDY / "comparison.md").read_bytes()
