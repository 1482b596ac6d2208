"""The test from the parts of a batch (paper-notes §5): the estimator against its definition in float64,
against the per-example statistics (parts of one example; the mean over random splits of one batch),
and the capture by hooks in one process against each micro-batch's gradient computed on its own."""
import math
import statistics as pystats

import pytest
import torch
from helpers import per_example_gradients, tiny_problem

from adabatch.losses import summed_cross_entropy
from adabatch.parallel.local_step import gradient_with_part_statistics
from adabatch.parallel.part_capture import PartCapture
from adabatch.stats import GradientSums, Needs, batch_statistics
from adabatch.stats.local import PartSums, part_statistics, reduce_part_statistics

EVERYTHING = Needs(inner_products=True, coordinates=True)


def split_rows(g: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(g.split(sizes))


def definitions(parts: list[torch.Tensor], sizes: list[int], tensor_sizes: list[int]) -> dict:
    """Every statistic straight from its definition over the parts: centred, float64, no identity used."""
    b, M = sum(sizes), len(sizes)
    w = torch.tensor(sizes, dtype=torch.float64)
    gm = torch.stack(parts)                                     # (M, d) part means
    gbar = (w[:, None] * gm).sum(0) / b
    sq = gbar @ gbar
    ip = gm @ gbar
    residual = gm - (ip / sq)[:, None] * gbar
    per_tensor_ip = per_tensor_orth = 0.0
    for gt, mt in zip(gm.split(tensor_sizes, dim=1), gbar.split(tensor_sizes)):
        ipt = gt @ mt
        per_tensor_ip += (w * (ipt - mt @ mt) ** 2).sum() / (M - 1)
        rt = gt - (ipt / (mt @ mt))[:, None] * mt
        per_tensor_orth += (w * (rt**2).sum(1)).sum() / (M - 1)
    return {
        "grad_sq_norm": sq,
        "norm_var": (w * ((gm - gbar) ** 2).sum(1)).sum() / (M - 1),
        "ip_var": (w * (ip - sq) ** 2).sum() / (M - 1),
        "orth_var": (w * (residual**2).sum(1)).sum() / (M - 1),
        "per_tensor_ip_var": per_tensor_ip,
        "per_tensor_orth_var": per_tensor_orth,
        "coord_var": (w[:, None] * (gm - gbar) ** 2).sum(0) / (M - 1),
        "gbar": gbar,
    }


def estimate(parts: list[torch.Tensor], sizes: list[int], tensor_sizes: list[int], ip_mode="global", needs=EVERYTHING):
    """The estimator through PartSums, the parts fed tensor by tensor as the hooks feed them."""
    shapes = [torch.Size([n]) for n in tensor_sizes]
    sums = PartSums(shapes, needs)
    b = sum(sizes)
    gbar = sum(s * g for s, g in zip(sizes, parts)) / b
    for size, g in zip(sizes, parts):
        sums.add_part(size, list(g.split(tensor_sizes)))
    kept = [(size, list(g.split(tensor_sizes)), 1.0) for size, g in zip(sizes, parts)] if needs.inner_products else []
    return reduce_part_statistics(sums, list(gbar.split(tensor_sizes)), ip_mode=ip_mode, kept=kept)


def random_parts(seed: int, sizes: list[int], d: int = 23) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(d, generator=g, dtype=torch.float64)
    return [centre + torch.randn(d, generator=g, dtype=torch.float64) / math.sqrt(s) for s in sizes]


@pytest.mark.parametrize("sizes", [[3, 5], [1, 4, 2], [7, 7, 6, 1, 3]])
def test_the_estimator_is_its_definition_over_the_parts(sizes):
    tensor_sizes = [10, 1, 12]
    parts = random_parts(len(sizes), sizes)
    expected = definitions(parts, sizes, tensor_sizes)
    for ip_mode in ("global", "per_tensor"):
        s = estimate(parts, sizes, tensor_sizes, ip_mode)
        assert s.batch_size == sum(sizes)
        assert s.grad_sq_norm == pytest.approx(float(expected["grad_sq_norm"]), rel=1e-12)
        assert s.norm_var == pytest.approx(float(expected["norm_var"]), rel=1e-10)
        prefix = "" if ip_mode == "global" else "per_tensor_"
        assert s.ip_var == pytest.approx(float(expected[prefix + "ip_var"]), rel=1e-9)
        assert s.orth_var == pytest.approx(float(expected[prefix + "orth_var"]), rel=1e-9)
        torch.testing.assert_close(torch.cat(s.coord_var), expected["coord_var"], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(torch.cat(s.mean_grad), expected["gbar"], rtol=1e-12, atol=0.0)


def test_parts_of_one_example_give_the_per_example_statistics_exactly():
    model, data, batch = tiny_problem("mlp")
    g = per_example_gradients(model, data, batch)  # (b, d)
    tensor_sizes = [p.numel() for p in model.parameters()]
    sums = GradientSums([torch.zeros(n, dtype=torch.float64) for n in tensor_sizes], EVERYTHING)
    sums.add_examples([gt for gt in g.split(tensor_sizes, dim=1)])
    mean_grad = sums.take_mean_gradient()
    sums.add_inner_products([gt for gt in g.split(tensor_sizes, dim=1)], mean_grad)
    for ip_mode in ("global", "per_tensor"):
        per_example = batch_statistics(_copy(sums), ip_mode, [m.clone() for m in mean_grad])
        parts = estimate(list(g), [1] * len(g), tensor_sizes, ip_mode)
        for field in ("grad_sq_norm", "norm_var", "ip_var", "orth_var"):
            assert getattr(parts, field) == pytest.approx(getattr(per_example, field), rel=1e-9), (ip_mode, field)
        torch.testing.assert_close(torch.cat(parts.coord_var), torch.cat(per_example.coord_var), rtol=1e-9, atol=1e-15)


def _copy(sums: GradientSums) -> GradientSums:
    copy = GradientSums(sums.params, sums.needs)
    copy.count, copy.sq_norm, copy.ip_sq, copy.global_ip_sq = sums.count, sums.sq_norm, sums.ip_sq, sums.global_ip_sq
    copy.coord_sq = [c.clone() for c in sums.coord_sq]
    return copy


def test_over_random_splits_of_one_batch_the_mean_estimate_is_the_per_example_statistic():
    """E V̂ = V exactly over the uniformly random splits of a fixed batch (sizes given), for every statistic.
    The mean of SPLITS estimates must lie within z standard errors of the per-example value, z the normal
    quantile for a two-sided false-alarm rate of 1e-3 shared (Bonferroni) among the quantities checked;
    the same band must exclude the estimator with M in place of M − 1, which is biased by (M − 1)/M."""
    model, data, batch = tiny_problem("mlp", batch_size=24)
    g = per_example_gradients(model, data, batch)
    b, d = g.shape
    centred = g - g.mean(0)
    gbar = g.mean(0)
    ip = g @ gbar
    residual = g - (ip / (gbar @ gbar))[:, None] * gbar
    truth = {
        "norm_var": (centred**2).sum() / (b - 1),
        "ip_var": ip.var(),
        "orth_var": ((residual - residual.mean(0)) ** 2).sum() / (b - 1),
    }
    live = centred.abs().amax(0) > 0  # coordinates with any variance (dead units have none)
    truth_coord = g.var(0)[live]

    rng = torch.Generator().manual_seed(12345)
    SPLITS = 1500
    draws = {k: [] for k in truth}
    draws_biased = []
    coord_draws = []
    for _ in range(SPLITS):
        M = int(torch.randint(2, 7, (1,), generator=rng))
        cuts = sorted(torch.randperm(b - 1, generator=rng)[: M - 1].add(1).tolist())
        sizes = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, b])]
        order = torch.randperm(b, generator=rng)
        parts = [rows.mean(0) for rows in g[order].split(sizes)]
        s = estimate(parts, sizes, [d])  # one tensor: the split into tensors is checked above
        for k in truth:
            draws[k].append(getattr(s, k))
        draws_biased.append(s.norm_var * (M - 1) / M)
        coord_draws.append(torch.cat(s.coord_var)[live])
    coord_draws = torch.stack(coord_draws)

    checked = len(truth) + int(live.sum())
    z = pystats.NormalDist().inv_cdf(1 - 1e-3 / (2 * checked))
    for k, values in draws.items():
        mean, se = pystats.fmean(values), pystats.stdev(values) / math.sqrt(SPLITS)
        assert abs(mean - float(truth[k])) <= z * se, (k, mean, float(truth[k]), se)
    coord_mean = coord_draws.mean(0)
    coord_se = coord_draws.std(0) / math.sqrt(SPLITS)
    assert bool(((coord_mean - truth_coord).abs() <= z * coord_se).all())
    biased_mean, biased_se = pystats.fmean(draws_biased), pystats.stdev(draws_biased) / math.sqrt(SPLITS)
    assert abs(biased_mean - float(truth["norm_var"])) > z * biased_se  # the check can fail


def test_parts_that_cannot_give_a_test_are_refused():
    one = PartSums([torch.Size([3])], Needs())
    one.add_part(5, [torch.ones(3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="needs at least 2 parts .* got 1; use more ranks or a smaller batch_size.max_micro"):
        part_statistics(one, [torch.ones(3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="at least one example, got size 0"):
        one.add_part(0, [torch.ones(3, dtype=torch.float64)])
    unkept = PartSums([torch.Size([3])], Needs(inner_products=True))
    for _ in range(2):
        unkept.add_part(2, [torch.ones(3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="need every part's gradient after the all-reduce: 0 of this rank's 2"):
        reduce_part_statistics(unkept, [torch.ones(3, dtype=torch.float64)])


def _classification_loss(data):
    def summed_loss(model, part):
        x, y = data.examples(part)
        return summed_cross_entropy(model(x), y)
    return summed_loss


@pytest.mark.parametrize("needs", [Needs(), EVERYTHING])
def test_hooks_capture_each_micro_batch_without_a_second_backward(needs):
    """In one process the micro-batches are the parts: the hooks' statistics equal the definitions over
    the micro-batch gradients computed one micro-batch at a time, and the step's gradient is the batch's."""
    model, data, batch = tiny_problem("cnn", batch_size=13)
    micro_batches = batch.split_into(4)
    sizes = [len(m) for m in micro_batches]
    params = list(model.parameters())
    tensor_sizes = [p.numel() for p in params]
    parts = []
    for m in micro_batches:
        model.zero_grad(set_to_none=True)
        (_classification_loss(data)(model, m) / len(m)).backward()
        parts.append(torch.cat([p.grad.flatten() for p in params]))
    expected = definitions(parts, sizes, tensor_sizes)

    model.zero_grad(set_to_none=True)
    capture = PartCapture(model, needs)
    loss, s = gradient_with_part_statistics(model, capture, micro_batches, _classification_loss(data), len(batch))
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in params]), expected["gbar"], rtol=1e-12, atol=1e-15)
    assert s.batch_size == 13
    assert s.norm_var == pytest.approx(float(expected["norm_var"]), rel=1e-10)
    assert s.grad_sq_norm == pytest.approx(float(expected["grad_sq_norm"]), rel=1e-12)
    if needs.inner_products:
        assert s.ip_var == pytest.approx(float(expected["ip_var"]), rel=1e-9)
        assert s.orth_var == pytest.approx(float(expected["orth_var"]), rel=1e-9)
        torch.testing.assert_close(torch.cat([v.flatten() for v in s.coord_var]), expected["coord_var"], rtol=1e-9, atol=1e-15)
    else:
        assert s.ip_var is None and s.coord_var is None
    # outside a part the hooks leave backward alone and add nothing
    before = capture.sums.sq_norm.clone()
    _classification_loss(data)(model, micro_batches[0]).backward()
    assert torch.equal(capture.sums.sq_norm, before)
    capture.detach()


def test_a_tied_weight_is_squared_after_its_uses_are_added():
    """An embedding shared with the output head: the hook must see the sum of both uses' gradients."""
    torch.manual_seed(0)
    model = TiedNet().double()
    x = torch.randint(0, 11, (6, 5))
    parts = [x[:2], x[2:3], x[3:]]
    reference = []
    for part in parts:
        model.zero_grad(set_to_none=True)
        (tied_loss(model, part) / len(part)).backward()
        reference.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    expected = definitions(reference, [2, 1, 3], [p.numel() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    _, s = gradient_with_part_statistics(model, PartCapture(model, Needs()), parts, tied_loss, len(x))
    assert s.norm_var == pytest.approx(float(expected["norm_var"]), rel=1e-10)


class TiedNet(torch.nn.Module):
    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, dim)
        self.mix = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embedding(tokens))))


def tied_loss(model, tokens):
    """Summed over sequences of each sequence's mean next-token-style loss (targets: the tokens shifted)."""
    logits = model(tokens[:, :-1])
    per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return per_token.view(len(tokens), -1).mean(1).sum()


def test_two_backward_passes_in_one_part_are_refused():
    model, data, batch = tiny_problem("mlp", batch_size=6)
    capture = PartCapture(model, Needs())
    capture.attach(capture.new_sums())
    with pytest.raises(RuntimeError, match=r"parameter model\.\S+ received two gradients in one part: run one backward per part"):
        with capture.part(6, 1.0):
            for _ in range(2):
                _classification_loss(data)(model, batch).backward()
    capture.detach()
