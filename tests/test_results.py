"""The committed CPU results regenerate from the committed run records (results/cpu/runs), byte for byte."""
from helpers import ROOT

from adabatch.analysis import group_runs, load_runs
from adabatch.analysis.tables import write_frontier_tables, write_tables

RESULTS = ROOT / "results" / "cpu"
TABLES = ("table.csv", "table.md", "frontier.csv", "frontier.md")


def test_committed_tables_regenerate_from_committed_records(tmp_path):
    experiments = group_runs(load_runs([RESULTS / "runs"]))
    assert sorted(experiment.slug for experiment in experiments) == sorted(
        path.parent.name for path in RESULTS.glob("*/table.md")
    )
    for experiment in experiments:
        assert all(method.completed and not method.incomplete for method in experiment.methods)
        out = tmp_path / experiment.slug
        written = [*write_tables(experiment, out), *write_frontier_tables(experiment, out)]
        assert sorted(path.name for path in written) == sorted(TABLES)
        for name in TABLES:
            assert (out / name).read_bytes() == (RESULTS / experiment.slug / name).read_bytes(), (experiment.slug, name)
