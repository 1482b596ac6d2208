"""Every test statistic against a brute-force float64 loop over examples, for both per-example
engines and for every split of the batch into micro-batches."""
import math

import pytest
import torch
from helpers import BATCH, CHANNELS_LAST_MODELS, MODELS, Float64, per_example_gradients, random_dataset, tiny_problem

from adabatch.batch_size import build_policy
from adabatch.data import TrainingData, build_augmentation
from adabatch.models import build_model
from adabatch.stats import ENGINES, Needs, build_engine, gradient_with_statistics
from adabatch.stats.ghost import Form, FormPolicy, GhostEngine
from adabatch.stats.sums import GradientSums, add
from adabatch.step import accumulate_gradient

SPLITS = (1, 2, 3, 7)  # number of micro-batches
ETA, THETA, NU = 0.3, 0.7, 1.1


def brute_force(model, data, batch):
    """Per-example gradients one example at a time, then every statistic straight from its definition."""
    params = [p for p in model.parameters() if p.requires_grad]
    g = per_example_gradients(model, data, batch)
    b = g.shape[0]
    gbar = g.mean(0)
    sq = gbar @ gbar
    ip = g @ gbar
    residual = g - (ip / sq)[:, None] * gbar
    sizes = [p.numel() for p in params]
    per_tensor_ip = per_tensor_orth = 0.0
    for gt, mt in zip(g.split(sizes, dim=1), gbar.split(sizes)):
        ipt = gt @ mt
        per_tensor_ip += ipt.var(unbiased=True)
        if mt @ mt > 0:
            rt = gt - (ipt / (mt @ mt))[:, None] * mt
            per_tensor_orth += ((rt - rt.mean(0)) ** 2).sum() / (b - 1)
    coord_var = g.var(0, unbiased=True)
    return {
        "gbar": gbar,
        "grad_sq_norm": sq,
        "norm_var": ((g - gbar) ** 2).sum() / (b - 1),
        "ip_var": ip.var(unbiased=True),
        "orth_var": ((residual - residual.mean(0)) ** 2).sum() / (b - 1),
        "per_tensor_ip_var": per_tensor_ip,
        "per_tensor_orth_var": per_tensor_orth,
        "coord_var": coord_var,
        # a coordinate with no variance proposes nothing (0/0 for dead units counts as 0)
        "coord_proposal": torch.where(coord_var == 0, 0.0, coord_var / (ETA**2 * gbar**2)).max(),
    }


@pytest.fixture(scope="module")
def references():
    cache = {}

    def get(model_key):
        if model_key not in cache:
            model, data, batch = tiny_problem(model_key)
            cache[model_key] = brute_force(model, data, batch)
        return cache[model_key]

    return get


def close(actual, expected, rel=1e-8):
    expected = float(expected)
    assert actual == pytest.approx(expected, rel=rel, abs=1e-300), (actual, expected)


@pytest.mark.parametrize("splits", SPLITS)
@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("model_key", [*MODELS, *CHANNELS_LAST_MODELS])
def test_statistics_match_brute_force(model_key, engine_name, splits, references):
    ref = references(model_key)
    model, data, batch = tiny_problem(model_key)
    engine = build_engine(engine_name, model)
    max_micro = math.ceil(BATCH / splits)
    assert len(batch.split(max_micro)) == splits
    needs = Needs(inner_products=True, coordinates=True)
    for ip_mode in ("global", "per_tensor"):
        model.zero_grad(set_to_none=True)
        _, s = gradient_with_statistics(engine, data, batch, max_micro, needs, ip_mode)
        close(s.grad_sq_norm, ref["grad_sq_norm"])
        close(s.norm_var, ref["norm_var"])
        close(s.ip_var, ref["ip_var" if ip_mode == "global" else "per_tensor_ip_var"])
        close(s.orth_var, ref["orth_var" if ip_mode == "global" else "per_tensor_orth_var"])
    coord_var = torch.cat([v.flatten() for v in s.coord_var])
    torch.testing.assert_close(coord_var, ref["coord_var"], rtol=1e-8, atol=1e-14 * float(ref["coord_var"].abs().max()))
    gbar = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(gbar, ref["gbar"], rtol=1e-10, atol=1e-14)

    proposals = {
        "norm": ref["norm_var"] / (ETA**2 * ref["grad_sq_norm"]),
        "inner_product": ref["ip_var"] / (THETA**2 * ref["grad_sq_norm"] ** 2),
        "augmented_inner_product": max(
            ref["ip_var"] / (THETA**2 * ref["grad_sq_norm"] ** 2), ref["orth_var"] / (NU**2 * ref["grad_sq_norm"])
        ),
        "coordinate_norm": ref["coord_proposal"],
    }
    s_global = gradient_with_statistics(engine, data, batch, max_micro, needs, "global")[1]
    parameters = {"norm": {"eta": ETA}, "coordinate_norm": {"eta": ETA}, "inner_product": {"theta": THETA},
                  "augmented_inner_product": {"theta": THETA, "nu": NU}}
    for name, expected in proposals.items():
        policy = build_policy({"name": name, "initial": 2, "max": 10**12, **parameters[name]}, budget=1)
        decision = policy.decide(step=1, samples=BATCH, batch_size=BATCH, statistics=s_global)
        close(decision.record["proposal"], expected)
        assert decision.next_size == max(BATCH, math.ceil(decision.record["proposal"]))


@pytest.mark.parametrize("engine_name", ["ghost", "opacus"])
@pytest.mark.parametrize("model_key", ["cnn", "vit"])
def test_tested_step_leaves_the_same_gradient_as_a_plain_step(model_key, engine_name):
    model, data, batch = tiny_problem(model_key)
    accumulate_gradient(model, data, batch, max_micro=5)
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    loss, _ = gradient_with_statistics(build_engine(engine_name, model), data, batch, 4, Needs())
    for p, g in zip(model.parameters(), plain):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-15)
    model.zero_grad(set_to_none=True)
    assert float(loss) == pytest.approx(float(accumulate_gradient(model, data, batch, max_micro=14)), rel=1e-12)


def test_opacus_hooks_are_off_outside_tested_steps():
    model, data, batch = tiny_problem("cnn")
    build_engine("opacus", model)
    accumulate_gradient(model, data, batch, max_micro=14)
    assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())


def test_a_single_example_has_no_variance():
    model, data, batch = tiny_problem("mlp")
    with pytest.raises(ValueError, match="at least 2 examples"):
        gradient_with_statistics(build_engine("functorch", model), data, batch.split(1)[0], 1, Needs())


def test_model_sized_sums_keep_a_first_contribution_then_add_in_float64():
    params = [torch.zeros(3), torch.zeros(2)]
    sums = GradientSums(params, Needs(coordinates=True))
    first = torch.tensor([1.0, 2.0, 3.0])
    add(sums.grad, 0, first)
    assert sums.grad[0] is first  # no float64 copy of the model while a pass runs
    second = torch.full((3,), 1e-9)  # lost if added in float32
    add(sums.grad, 0, second)
    expected = first.double() + second.double()
    assert sums.grad[0].dtype == torch.float64 and torch.equal(sums.grad[0], expected) and expected[0] != 1.0
    assert first.tolist() == [1.0, 2.0, 3.0]
    add(sums.coord_sq, 1, torch.tensor([4.0, 5.0]))
    reduced = sums.first_phase()  # float64 throughout, zeros where nothing was added
    assert all(t.dtype == torch.float64 for t in reduced)
    assert torch.equal(reduced[0], expected)
    assert [t.tolist() for t in reduced[1:]] == [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0, 0.0], [4.0, 5.0]]


def test_engines_agree_in_float32_on_channels_last_activations():
    """On the CPU a 1-channel conv can output channels-last; Opacus' conv sampler assumes a
    contiguous layout unless the engine makes activations contiguous."""
    torch.manual_seed(0)
    model = build_model("cnn", (1, 12, 12), 10)
    x = torch.randn(6, 12, 12, 1).permute(0, 3, 1, 2)  # strides (144, 1, 12, 1), as the IDX/digits data arrive
    y = torch.randint(0, 10, (6,))
    assert not model[0](x).is_contiguous()  # the situation this test is about
    _, functorch = build_engine("functorch", model).per_example_gradients(x, y)
    _, opacus = build_engine("opacus", model).per_example_gradients(x, y)
    for a, b in zip(opacus, functorch):
        assert (a - b).norm() <= 1e-5 * b.norm()


GHOST_BRANCHES = {  # how the ghost engine treats dense layers with several positions (stats/ghost/forms.py)
    "gram_from_patches": FormPolicy(form_ratio=1e9, min_chunk_elements=1, gram_by_offsets_cost=0.0),
    "gram_by_offsets": FormPolicy(form_ratio=1e9, gram_by_offsets_cost=1e9),  # (convolutions)
    "formed_from_patches": FormPolicy(form_ratio=0, grouped_conv_min_channels=10**9,
                                      min_transient_elements=1 << 40),  # one chunk; inner products from kept gradients
    "formed_grouped": FormPolicy(form_ratio=0, grouped_conv_min_channels=0, grouped_conv_positions_per_output=-1),
    # inner products by applying the layer again (nothing kept)
    "formed_one_example_a_chunk": FormPolicy(form_ratio=0, min_transient_elements=1, transient_share=0.0),
}
NEEDS = {"norm": Needs(), "inner_products": Needs(inner_products=True), "coordinates": Needs(coordinates=True)}


@pytest.mark.parametrize("splits", (1, 3))
@pytest.mark.parametrize("needs", NEEDS)
@pytest.mark.parametrize("branch", GHOST_BRANCHES)
@pytest.mark.parametrize("model_key", [*MODELS, *CHANNELS_LAST_MODELS])
def test_every_ghost_branch_matches_brute_force(model_key, branch, needs, splits, references):
    """Each way the ghost engine can treat a layer, alone and with each test's needs (the combined
    needs of the test above force the formed branch), for an unsplit and a split batch."""
    ref = references(model_key)
    model, data, batch = tiny_problem(model_key)
    _, s = gradient_with_statistics(GhostEngine(model, policy=GHOST_BRANCHES[branch]), data, batch, math.ceil(BATCH / splits), NEEDS[needs])
    close(s.grad_sq_norm, ref["grad_sq_norm"])
    close(s.norm_var, ref["norm_var"])
    if needs == "inner_products":
        close(s.ip_var, ref["ip_var"])
        close(s.orth_var, ref["orth_var"])
    if needs == "coordinates":
        coord_var = torch.cat([v.flatten() for v in s.coord_var])
        torch.testing.assert_close(coord_var, ref["coord_var"], rtol=1e-8, atol=1e-14 * float(ref["coord_var"].abs().max()))
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters()]), ref["gbar"], rtol=1e-10, atol=1e-14)
    assert all(p.requires_grad for p in model.parameters())  # a ghost pass turns them off only meanwhile


def test_the_ghost_workspace_reuses_its_memory_until_a_larger_or_other_tensor_is_asked_for():
    from adabatch.stats.ghost import Workspace

    workspace, like = Workspace(), torch.zeros(1)
    first = workspace.take((4, 3, 2), like)
    assert workspace.take((2, 5), like).data_ptr() == first.data_ptr()
    assert workspace.take((5, 5), like).shape == (5, 5) and workspace.memory.numel() == 25  # grown
    assert workspace.take((2, 2), like.double()).dtype == torch.float64


def test_a_dense_layer_keeps_its_gradients_for_the_inner_products_while_they_fit_in_keep_factor_budgets():
    from adabatch.stats.ghost.rules.linear import LinearRule

    policy = FormPolicy()
    rule, n, positions = LinearRule(torch.nn.Linear(6, 5), policy), 8, 12  # 240 elements of per-example gradients
    fits, too_small = int(240 // policy.keep_factor), int(240 // policy.keep_factor) - 1
    assert rule.weight_forms(n, positions, False, True, fits)[0] is Form.FORMED_KEPT
    assert Form.FORMED_KEPT not in rule.weight_forms(n, positions, False, True, too_small)
    assert Form.FORMED_KEPT not in rule.weight_forms(n, positions, False, False, fits)  # nothing to keep them for


def test_the_counts_form_the_vits_mlp_gradients_and_take_the_gram_form_for_resnet18s_8x8_convolutions():
    """form_ratio's two sides as docs/ghost-engine.md measured them: forming where the Gram form takes 33 multiply-adds
    per element of per-example gradient, the Gram form where it takes 20 (a stride-2 convolution to 256
    channels at 8x8)."""
    from adabatch.stats.ghost.rules.conv2d import Conv2dRule
    from adabatch.stats.ghost.rules.linear import LinearRule

    policy = FormPolicy()
    mlp = LinearRule(torch.nn.Linear(192, 384), policy)
    conv = Conv2dRule(torch.nn.Conv2d(128, 256, 3, stride=2, padding=1), policy)
    for keep in (False, True):
        assert mlp.weight_forms(128, 65, False, keep, budget=1 << 30)[0].is_formed
        assert conv.weight_forms(128, 64, False, keep, budget=1 << 20)[0] is Form.GRAM


@pytest.mark.parametrize("options", [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": (2, 3), "stride": (2, 1), "padding": (0, 2)},
    {"kernel_size": 3, "stride": 2, "dilation": (2, 1), "padding": 1},
    {"kernel_size": 1, "stride": 2},
])
def test_ghost_conv_patches_are_unfolds_patches(options):
    from adabatch.stats.ghost.rules.conv2d import Conv2dRule

    conv = torch.nn.Conv2d(3, 4, **options)
    a = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    unfolded = torch.nn.functional.unfold(a, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    assert torch.equal(Conv2dRule(conv, FormPolicy()).patches(a), unfolded.transpose(1, 2))


@pytest.mark.parametrize("options", [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": (2, 3), "stride": (2, 1), "padding": (0, 2)},
    {"kernel_size": 3, "stride": 2, "dilation": (2, 1), "padding": 1},
    {"kernel_size": 1, "stride": 2},
])
def test_ghost_conv_input_grams_by_offsets_are_the_patches_grams(options):
    from adabatch.stats.ghost.rules.conv2d import Conv2dRule

    conv = torch.nn.Conv2d(3, 4, **options)
    a = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    patches = torch.nn.functional.unfold(a, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    rule = Conv2dRule(conv, FormPolicy(gram_by_offsets_cost=1e9))
    assert rule.grams_by_offsets(a)
    torch.testing.assert_close(rule.input_grams(a), patches.transpose(1, 2) @ patches,
                               rtol=1e-12, atol=1e-12)


class Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.layer(self.layer(x.flatten(1)[:, :4]))


@pytest.mark.parametrize("module, message", [
    (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.PReLU()), "PReLU has no ghost rule"),
    (torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, groups=1, padding="same"), torch.nn.Flatten()), "padding='same'"),
])
def test_ghost_engine_names_a_layer_it_cannot_handle(module, message):
    with pytest.raises(ValueError, match=message + ".*use batch_size.engine=opacus"):
        build_engine("ghost", module)


def test_ghost_engine_refuses_a_module_called_twice():
    model, data, batch = tiny_problem("mlp")
    with pytest.raises(RuntimeError, match="'layer' runs more than once per forward pass"):
        gradient_with_statistics(build_engine("ghost", Twice()), data, batch, BATCH, Needs())


@pytest.mark.parametrize("max_micro", [BATCH, 5])
def test_ghost_allows_in_place_operations_on_the_first_layers_output(max_micro):
    """The first layer's output is tied to the backward's anchor (ghost.Anchored); a ReLU(inplace=True)
    on it must still run, and the statistics still be the per-example ones."""
    model, data, batch = tiny_problem("mlp")
    model = Float64(torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(inplace=True),
                                        torch.nn.Flatten(), torch.nn.Linear(48, 5)))
    expected = brute_force(model, data, batch)
    stats = gradient_with_statistics(build_engine("ghost", model), data, batch, max_micro,
                                     Needs(inner_products=True), "global")[1]
    for key in ("grad_sq_norm", "norm_var", "ip_var", "orth_var"):
        close(getattr(stats, key), expected[key])


def gradients_under_the_steps_masks(model, data, batch, max_micro):
    """Every example's gradient, one backward per example, with the dropout masks that the step's first
    pass draws: one forward per micro-batch, in order, from the same generator state."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for part in batch.split(max_micro):
        x, y = data.examples(part)
        losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        for loss in losses:
            rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)]))
    return torch.stack(rows)


@pytest.mark.parametrize("max_micro", [16, 4, 5])
@pytest.mark.parametrize("engine_name", ["ghost", "opacus"])  # functorch with dropout is refused (test_bad_configs)
def test_with_dropout_split_and_unsplit_batches_give_the_statistics_of_the_steps_gradients(engine_name, max_micro):
    """Issue 19: a second pass that drew new dropout masks made V_ip of a split batch negative."""
    shape = (3, 8, 8)
    data = TrainingData(random_dataset(shape), build_augmentation("vit"), seed=0, device=torch.device("cpu"))
    batch = data.draw(16)
    torch.manual_seed(0)
    model = Float64(build_model("vit", shape, 5, dim=8, depth=2, heads=2, patch=4, dropout=0.5))
    torch.manual_seed(1)
    g = gradients_under_the_steps_masks(model, data, batch, max_micro)
    gbar, b = g.mean(0), len(g)
    engine = build_engine(engine_name, model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    _, s = gradient_with_statistics(engine, data, batch, max_micro, Needs(inner_products=True))
    after = torch.rand(1)
    close(s.ip_var, (g @ gbar).var(unbiased=True))
    close(s.norm_var, ((g - gbar) ** 2).sum() / (b - 1))
    close(s.grad_sq_norm, gbar @ gbar)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters()]), gbar, rtol=1e-10, atol=1e-14)
    torch.manual_seed(1)
    gradients_under_the_steps_masks(model, data, batch, max_micro)
    assert torch.equal(after, torch.rand(1))  # the generators go on as after one pass


class TwoShapes(torch.nn.Module):
    """Two linear layers over positions, each with one form far cheaper than the other: `long` (4 -> 4
    over 512 positions: Gram matrices 512x512, per-example gradients 4x4) and `wide` (1024 -> 1024 over
    2 positions: Gram matrices 2x2, per-example gradients 1024x1024)."""

    def __init__(self) -> None:
        super().__init__()
        self.long, self.wide, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(1024, 1024), torch.nn.Linear(2048, 10)

    def forward(self, x):
        h = torch.tanh(self.long(x)).reshape(len(x), 2, 1024)
        return self.head(torch.tanh(self.wide(h)).flatten(1))


def test_ghost_measured_keeps_the_faster_form_and_a_restored_choice():
    from adabatch import AdaptiveBatch

    torch.manual_seed(0)
    models = [TwoShapes() for _ in range(3)]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    x, y = torch.randn(32, 512, 4), torch.randint(0, 10, (32,))
    policy = {"name": "norm", "initial": 2, "max": 10**6, "eta": 0.5}
    measured, restored, forced = (AdaptiveBatch(m, policy, engine="ghost_measured") for m in models)
    first = measured.step(x, y)
    assert measured.engine.state_dict() == {"forms": {"long": "formed", "wide": "gram"}}
    restored.load_state_dict(measured.state_dict())
    flipped = {"forms": {"long": "gram", "wide": "formed"}}
    forced.load_state_dict({**measured.state_dict(), "engine": flipped})
    x, y = torch.randn(32, 512, 4), torch.randint(0, 10, (32,))  # a second step (the parameters did not move)
    second, again, other = (adaptive.step(x, y) for adaptive in (measured, restored, forced))
    assert again.statistics == second.statistics != first.statistics  # the same forms: the same roundoff
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(models[0].parameters(), models[1].parameters()))
    assert forced.engine.state_dict() == flipped  # taken as restored, not measured again
    for key, value in second.statistics.items():
        expected = value if isinstance(value, str) else pytest.approx(value, rel=1e-4)  # statistics_source
        assert other.statistics[key] == expected, key


class DeadBranch(torch.nn.Module):
    """A layer whose output is multiplied by zero: its gradient is exactly zero for every example, so its
    ḡ^t = 0 and the per-tensor projections have no direction for it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5))
        self.dead = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 5))

    def forward(self, x):
        return self.body(x) + 0.0 * self.dead(x)


@pytest.mark.parametrize("splits", (1, 3))
@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_tensor_with_no_mean_gradient_is_left_out_of_the_per_tensor_projections(engine_name, splits):
    _, data, batch = tiny_problem("mlp")
    torch.manual_seed(0)
    model = Float64(DeadBranch())
    ref = brute_force(model, data, batch)
    assert float(model.model.dead[1].weight.grad.abs().max()) == 0.0  # the premise: ḡ^t = 0 there
    _, s = gradient_with_statistics(build_engine(engine_name, model), data, batch, math.ceil(BATCH / splits),
                                    Needs(inner_products=True), "per_tensor")
    close(s.ip_var, ref["per_tensor_ip_var"])
    close(s.orth_var, ref["per_tensor_orth_var"])
