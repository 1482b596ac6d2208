"""Token models: an embedding rule, a parameter shared by two modules (a head tied to the token
embedding) and a loss per sequence, for every engine, against the brute-force float64 loop."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adabatch.data import Batch
from adabatch.stats import Needs, build_engine, gradient_with_statistics
from adabatch.stats.ghost import FormPolicy, GhostEngine

VOCABULARY, LENGTH, BATCH = 7, 6, 10  # a short sequence over a small vocabulary: tokens repeat within one


class TinyLM(nn.Module):
    """Token and position embeddings, LayerNorm and a Linear over the tokens, and a head whose weight is
    the token embedding's."""

    def __init__(self, dim: int = 5, tied: bool = True) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCABULARY, dim), nn.Embedding(LENGTH, dim)
        self.norm, self.mix = nn.LayerNorm(dim), nn.Linear(dim, dim)
        self.head = nn.Linear(dim, VOCABULARY, bias=False)
        if tied:
            self.head.weight = self.tokens.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device).expand_as(x)  # looked up per example
        h = self.tokens(x) + self.positions(positions)
        return self.head(h + torch.tanh(self.mix(self.norm(h))))


def sequence_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean token cross-entropy, summed over sequences."""
    tokens = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    return tokens.view(y.shape).mean(1).sum()


class Sequences:
    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, VOCABULARY, (BATCH, LENGTH), generator=g)
        self.y = torch.randint(0, VOCABULARY, (BATCH, LENGTH), generator=g)

    def examples(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[batch.indices], self.y[batch.indices]


def tiny_lm(tied: bool = True, seed: int = 0) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(tied=tied).double()


def brute_force(model: nn.Module, data: Sequences) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(BATCH):
        loss = sequence_loss(model(data.x[i:i + 1]), data.y[i:i + 1])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    g = torch.stack(rows)
    gbar, b = g.mean(0), len(g)
    ip = g @ gbar
    residual = g - (ip / (gbar @ gbar))[:, None] * gbar
    per_tensor_ip = per_tensor_orth = 0.0
    sizes = [p.numel() for p in params]
    for gt, mt in zip(g.split(sizes, dim=1), gbar.split(sizes)):
        ipt = gt @ mt
        per_tensor_ip += ipt.var()
        rt = gt - (ipt / (mt @ mt))[:, None] * mt
        per_tensor_orth += ((rt - rt.mean(0)) ** 2).sum() / (b - 1)
    return {"gbar": gbar, "grad_sq_norm": gbar @ gbar, "norm_var": ((g - gbar) ** 2).sum() / (b - 1),
            "ip_var": ip.var(), "orth_var": ((residual - residual.mean(0)) ** 2).sum() / (b - 1),
            "per_tensor_ip_var": per_tensor_ip, "per_tensor_orth_var": per_tensor_orth, "coord_var": g.var(0)}


def close(actual, expected, rel=1e-9):
    assert actual == pytest.approx(float(expected), rel=rel), (actual, float(expected))


ENGINES = {
    "ghost": lambda model: GhostEngine(model, loss=sequence_loss),
    # the embeddings and the Linear over tokens formed (the Gram forms are the default at this size)
    "ghost_formed": lambda model: GhostEngine(model, policy=FormPolicy(form_ratio=0), loss=sequence_loss),
    "ghost_gram": lambda model: GhostEngine(model, policy=FormPolicy(form_ratio=1e9), loss=sequence_loss),
    "functorch": lambda model: build_engine("functorch", model, loss=sequence_loss),
    "opacus": lambda model: build_engine("opacus", model, loss=sequence_loss),  # adds a tied weight's per example
}


CASES = [(name, splits, True) for name in ENGINES for splits in (1, 3)] + [("ghost", 3, False), ("ghost_formed", 1, False)]
STEPS = [(Needs(), "global"), (Needs(inner_products=True), "global"), (Needs(True, True), "global"),
         (Needs(True, True), "per_tensor")]


@pytest.mark.parametrize("engine_name, splits, tied", CASES)
def test_token_model_statistics_match_brute_force(engine_name, splits, tied):
    data, model = Sequences(), tiny_lm(tied)
    assert (model.tokens.weight is model.head.weight) == tied
    ref = brute_force(model, data)
    engine = ENGINES[engine_name](model)
    batch = Batch(torch.arange(BATCH), None)
    for needs, ip_mode in STEPS:
        model.zero_grad(set_to_none=True)
        _, s = gradient_with_statistics(engine, data, batch, math.ceil(BATCH / splits), needs, ip_mode)
        close(s.grad_sq_norm, ref["grad_sq_norm"])
        close(s.norm_var, ref["norm_var"])
        if needs.inner_products:
            close(s.ip_var, ref["ip_var" if ip_mode == "global" else "per_tensor_ip_var"])
            close(s.orth_var, ref["orth_var" if ip_mode == "global" else "per_tensor_orth_var"])
        if needs.coordinates:
            torch.testing.assert_close(torch.cat([v.flatten() for v in s.coord_var]), ref["coord_var"],
                                       rtol=1e-9, atol=1e-15)
        torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters()]), ref["gbar"],
                                   rtol=1e-10, atol=1e-15)


def test_adding_the_tied_modules_squared_norms_would_be_visibly_wrong():
    """What the tied model's test above guards against: the sum of the token embedding's and the head's
    own Σ‖g_i‖² differs from the shared parameter's."""
    data, model = Sequences(), tiny_lm()
    g_tokens, g_head = [], []
    for i in range(BATCH):
        x, y = data.x[i:i + 1], data.y[i:i + 1]
        h = model.tokens(x) + model.positions(torch.arange(LENGTH).expand_as(x))
        h = h + torch.tanh(model.mix(model.norm(h)))
        weight = model.tokens.weight
        detached = weight.detach().requires_grad_()
        loss = sequence_loss(F.linear(h, detached), y)  # the head's share alone
        g_head.append(torch.autograd.grad(loss, detached, retain_graph=True)[0])
        g_tokens.append(torch.autograd.grad(sequence_loss(F.linear(h, weight.detach()), y), weight)[0])
    together = sum(((a + b) ** 2).sum() for a, b in zip(g_tokens, g_head))
    apart = sum((a**2).sum() + (b**2).sum() for a, b in zip(g_tokens, g_head))
    assert abs(float(together - apart)) > 1e-3 * float(together)


def test_the_embedding_rule_adds_a_repeated_tokens_output_gradients_before_squaring():
    from adabatch.stats.ghost.rules.embedding import EmbeddingRule

    embedding = nn.Embedding(4, 3).double()
    x = torch.tensor([[1, 1, 2], [0, 3, 3]])
    delta = torch.randn(2, 3, 3, dtype=torch.float64)
    expected = torch.zeros(2, 4, 3, dtype=torch.float64)
    for i in range(2):
        for t in range(3):
            expected[i, x[i, t]] += delta[i, t]
    for form_ratio in (0, 1e9):  # formed, Gram
        rule = EmbeddingRule(embedding, FormPolicy(form_ratio=form_ratio))
        sums = rule.first_phase(x, delta, False, True, 1 << 20, None)
        close(sums.sq_norm[0], (expected**2).sum(), rel=1e-12)
        torch.testing.assert_close(sums.grad[0], expected.sum(0))
        direction = torch.randn(4, 3, dtype=torch.float64)
        torch.testing.assert_close(sums.inner_products([direction])[0], expected.flatten(1) @ direction.flatten())


def test_an_embedding_with_a_padding_index_has_no_gradient_there():
    model = tiny_lm(tied=False)
    model.tokens.padding_idx = 0
    data = Sequences()
    ref = brute_force(model, data)
    _, s = gradient_with_statistics(GhostEngine(model, loss=sequence_loss), data, Batch(torch.arange(BATCH), None),
                                    BATCH, Needs(coordinates=True))
    close(s.norm_var, ref["norm_var"])
    assert float(model.tokens.weight.grad[0].abs().max()) == 0.0


def test_ghost_refuses_a_layer_that_does_not_see_one_example_per_row():
    class SharedPositions(TinyLM):
        def forward(self, x):
            h = self.tokens(x) + self.positions(torch.arange(x.shape[1]))  # (T, d): the batch's positions at once
            return self.head(h)

    torch.manual_seed(0)
    model, data = SharedPositions().double(), Sequences()
    with pytest.raises(RuntimeError, match="'positions' sees an input of shape \\(6,\\) for 10 examples"):
        gradient_with_statistics(GhostEngine(model, loss=sequence_loss), data, Batch(torch.arange(BATCH), None),
                                 BATCH, Needs())


def test_ghost_names_an_embedding_option_it_cannot_handle():
    with pytest.raises(ValueError, match="'0'.*scale_grad_by_freq=True.*use batch_size.engine=opacus"):
        build_engine("ghost", nn.Sequential(nn.Embedding(5, 3, scale_grad_by_freq=True)))
