"""The tests' statistics on the real GPT (model=gpt, a tiny one: 2 layers, n_embd 16, block 8) for every
engine, split into micro-batches and not, against a brute-force float64 loop over sequences: the token
and position embeddings, the head tied to the token embedding, LayerNorm and causal attention over the
sequence, and dropout, whose masks the loop replays (each sequence run alone with the masks the batched
forward drew for it)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adabatch.data import Batch
from adabatch.models.gpt import GPT, gpt
from adabatch.stats import Needs, build_engine, gradient_with_statistics
from adabatch.tasks import TASKS

VOCAB, BLOCK, N = 11, 8, 6  # 8 tokens over a vocabulary of 11: tokens repeat within a sequence
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": BLOCK}
LOSS = TASKS["next_token"].loss
# What the tests need: the norm test its sums alone; the inner-product and augmented inner-product tests
# the inner products too (a second, mask-replaying pass when split), and the coordinate-wise norm test
# per-coordinate sums (asked together with the inner products: one step checks all three's statistics).
TESTS = [("norm", Needs(), "global"),
         ("inner_product, augmented_inner_product, coordinate_norm", Needs(inner_products=True, coordinates=True),
          "global")]


def tiny_gpt(dropout: float) -> GPT:
    torch.manual_seed(0)
    return gpt((BLOCK,), VOCAB, **TINY, dropout=dropout).double()


class Windows:
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        window = torch.randint(0, VOCAB, (N, BLOCK + 1), generator=g)
        window[0, :4] = window[0, -1]  # one sequence repeats a token: its embedding row adds several δ_t
        self.x, self.y = window[:, :-1], window[:, 1:]

    def examples(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[batch.indices], self.y[batch.indices]


def dropout_modules(model: nn.Module) -> list[nn.Dropout]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def drawn_masks(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """The masks a batched forward of x draws in each Dropout (kept units: output != 0)."""
    masks = {}

    def record(module, inputs, output):
        masks[module] = output != 0

    handles = [m.register_forward_hook(record) for m in dropout_modules(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return masks


def per_sequence_gradients(model: nn.Module, data: Windows, parts: list[torch.Tensor], seed: int) -> torch.Tensor:
    """(N, parameters): each sequence's gradient of its own loss, one sequence at a time, with the
    dropout masks that the step's forward of its micro-batch draws (the same generator, the same order)."""
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    masks = [drawn_masks(model, data.x[part]) for part in parts]
    rows = []
    for part, part_masks in zip(parts, masks):
        for row, i in enumerate(part.tolist()):
            def replay(module, inputs, output, row=row):
                return inputs[0] * part_masks[module][row : row + 1] / (1 - module.p)

            handles = [m.register_forward_hook(replay) for m in dropout_modules(model)]
            try:
                loss = LOSS(model(data.x[i : i + 1]), data.y[i : i + 1])
                rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
            finally:
                for handle in handles:
                    handle.remove()
    return torch.stack(rows)  # parts cover 0..N-1 in order


def reference(g: torch.Tensor) -> dict[str, torch.Tensor]:
    gbar, b = g.mean(0), len(g)
    ip = g @ gbar
    residual = g - (ip / (gbar @ gbar))[:, None] * gbar
    return {"gbar": gbar, "grad_sq_norm": gbar @ gbar, "norm_var": ((g - gbar) ** 2).sum() / (b - 1),
            "ip_var": ip.var(), "orth_var": ((residual - residual.mean(0)) ** 2).sum() / (b - 1),
            "coord_var": g.var(0)}


def close(actual, expected, rel=1e-8):
    assert actual == pytest.approx(float(expected), rel=rel), (actual, float(expected))


ENGINES = ("ghost", "ghost_measured", "opacus", "functorch")
# functorch's vmap cannot draw a batched forward's masks: runs refuse it with dropout (validation.py)
CASES = [(engine, splits, dropout) for engine in ENGINES for splits in (1, 3) for dropout in (0.0, 0.1)
         if not (engine == "functorch" and dropout)]


@pytest.mark.parametrize("engine_name, splits, dropout", CASES)
def test_gpt_statistics_match_the_loop_over_sequences(engine_name, splits, dropout):
    data, model = Windows(), tiny_gpt(dropout)
    assert model.lm_head.weight is model.wte.weight and len(dropout_modules(model)) == (7 if dropout else 0)
    engine = build_engine(engine_name, model, loss=LOSS)
    max_micro = math.ceil(N / splits)
    batch = Batch(torch.arange(N), None)
    parts = [p.indices for p in batch.local_micro_batches(0, 1, max_micro)]
    assert len(parts) == splits
    for seed, (test, needs, ip_mode) in enumerate(TESTS):
        ref = reference(per_sequence_gradients(model, data, parts, seed))
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        _, s = gradient_with_statistics(engine, data, batch, max_micro, needs, ip_mode)
        close(s.grad_sq_norm, ref["grad_sq_norm"])
        close(s.norm_var, ref["norm_var"])
        if needs.inner_products:
            close(s.ip_var, ref["ip_var"])
            close(s.orth_var, ref["orth_var"])
        if needs.coordinates:
            torch.testing.assert_close(torch.cat([v.flatten() for v in s.coord_var]), ref["coord_var"],
                                       rtol=1e-8, atol=1e-16)
        torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters()]), ref["gbar"],
                                   rtol=1e-9, atol=1e-15, msg=f"{test}: the batch gradient")


def test_the_replayed_masks_matter():
    """What the dropout cases guard against: the loop with other masks gives other statistics."""
    data, model = Windows(), tiny_gpt(0.1)
    parts = [torch.arange(N)]
    same = reference(per_sequence_gradients(model, data, parts, seed=0))
    other = reference(per_sequence_gradients(model, data, parts, seed=1))
    assert abs(float(same["norm_var"] - other["norm_var"])) > 1e-6 * float(same["norm_var"])
