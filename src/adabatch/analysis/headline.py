"""What an experiment's methods are compared by: the evaluation its tables, frontier and curves show,
and which way is better. Classification compares test accuracy (higher is better, shown in percent);
next-token prediction compares the validation loss in nats per token (lower is better)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Headline:
    key: str  # the field of evaluation records; summaries hold final_<key>
    label: str  # what a table, axis or note calls it
    higher_is_better: bool
    scale: float  # shown as scale x value (100: a fraction in percent)
    margins: tuple[float, ...]  # the frontier's levels: the best mean final value less (or plus) these, shown units
    level_format: str  # a level as shown: "{:d}%" or "{:.2f}"
    level_column: str  # the frontier CSV's columns for a level: steps_to_<level_column>_mean

    @property
    def final_key(self) -> str:
        return f"final_{self.key}"

    def shown(self, value: float) -> float:
        """`value` in shown units, rounded to 6 decimals so that 0.57 is 57 and not 56.99999999999999."""
        return round(self.scale * value, 6)

    def best(self, values: Sequence[float]) -> float:
        return max(values) if self.higher_is_better else min(values)

    def levels(self, best: float) -> tuple[float, ...]:
        """The levels for a best mean final value (summary units), in shown units: worse than the best by
        each margin, rounded away from the best (to whole percent, to a hundredth of a nat)."""
        shown = self.shown(best)
        if self.higher_is_better:
            return tuple(math.floor(round(shown - margin, 6)) for margin in self.margins)
        return tuple(math.ceil(round(100 * (shown + margin), 6)) / 100 for margin in self.margins)

    def reached(self, value: float, level: float) -> bool:
        shown = self.shown(value)
        return shown >= level if self.higher_is_better else shown <= level

    def level_name(self, level: float) -> str:
        return self.level_format.format(level)


ACCURACY = Headline("test_acc", "test accuracy", True, 100.0, (5, 2, 1), "{:d}%", "{:d}pct")
VALIDATION_LOSS = Headline("test_loss", "validation loss (nats/token)", False, 1.0, (0.2, 0.1, 0.05), "{:.2f}",
                           "loss_{:.2f}")
# A run's task, read from its summary: next-token runs report perplexity (adabatch.tasks.NextToken.metric).
BY_SUMMARY_METRIC = {"final_test_acc": ACCURACY, "final_test_perplexity": VALIDATION_LOSS}


def headline_of(summaries: Sequence[dict]) -> Headline:
    """The headline of runs with these summaries (their task's); accuracy when none says otherwise."""
    for summary in summaries:
        for key, headline in BY_SUMMARY_METRIC.items():
            if key in summary:
                return headline
    return ACCURACY
