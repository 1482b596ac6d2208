"""The gradient-noise-scale policy: grow the batch to a multiple of McCandlish et al.'s (2018) simple
noise scale B_simple = tr(Σ) / ‖G‖².

Both come from the norm test's sums. With b per-example gradients, the unbiased estimates are
tr(Σ)^ = Σ‖g_i − ḡ‖² / (b − 1) = V and ‖G‖²^ = ‖ḡ‖² − V / b. One batch's ‖G‖²^ is noisy (it can be
negative), so, as common implementations do, the numerator and the denominator are smoothed
separately by exponential moving averages over the tested steps, avg ← ema·avg + (1 − ema)·estimate,
and only then divided. The averages start at zero and are bias-corrected as Adam's moments are
(divided by 1 − ema^k after k updates): the correction cancels in the ratio, and makes each recorded
average an estimate in its own right (the first equals the first batch's).

The next batch is min(max, ceil(max(b, multiple · B_simple))): it never shrinks, and testing stops at
the cap. While the smoothed ‖G‖² is not positive there is no estimate of B_simple yet (recorded as
null) and the batch keeps its size: a batch of a few examples often gives ‖G‖²^ < 0 (on the digits
CNN at b = 4, the first step did), and reading that as an infinite noise scale would jump to the cap
for good on one noisy estimate. In the norm test's terms the batch passes when
tr(Σ)_avg / b ≤ ‖G‖²_avg / multiple: those are the recorded sides.
"""
from __future__ import annotations

from typing import Any

from ..checks import fraction, positive
from ..stats import BatchStatistics
from .adaptive import AdaptiveTest, ratio


class NoiseScale(AdaptiveTest):
    def __init__(self, initial: int, max: int, multiple: float = 1.0, ema: float = 0.9, **options) -> None:  # noqa: A002
        super().__init__(initial, max, **options)
        self.multiple = positive("batch_size.multiple", multiple, why="the batch grows to multiple x B_simple")
        self.ema = fraction("batch_size.ema", ema)  # the weight of the past in the moving averages
        self.noise_sum = 0.0   # the moving average of tr(Σ)^, before bias correction
        self.signal_sum = 0.0  # ... of ‖G‖²^
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"noise_sum": self.noise_sum, "signal_sum": self.signal_sum, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise_sum, self.signal_sum, self.updates = state["noise_sum"], state["signal_sum"], state["updates"]

    def propose(self, s: BatchStatistics) -> tuple[float, dict[str, float | None]]:
        """Updates the moving averages with this batch: call it once per tested step."""
        signal = s.grad_sq_norm - s.norm_var / s.batch_size
        self.noise_sum = self.ema * self.noise_sum + (1 - self.ema) * s.norm_var
        self.signal_sum = self.ema * self.signal_sum + (1 - self.ema) * signal
        self.updates += 1
        correction = 1 - self.ema**self.updates
        noise_avg, signal_avg = self.noise_sum / correction, self.signal_sum / correction
        noise_scale = ratio(noise_avg, signal_avg) if signal_avg > 0 else None
        return 0.0 if noise_scale is None else self.multiple * noise_scale, {
            "grad_sq_est": signal, "norm_var_avg": noise_avg, "grad_sq_est_avg": signal_avg, "noise_scale": noise_scale,
            "test_lhs": noise_avg / s.batch_size, "test_rhs": signal_avg / self.multiple,
        }
