import copy
import subprocess
import sys

import opacus
import pytest
import torch
import torch.nn.functional as F
from opacus.validators import ModuleValidator
from torch import nn
from torch.func import functional_call, grad, vmap

from adabatch.components import Parameters, shipped, shipped_names
from adabatch.models import build_model, make_norm, register_opacus_samplers

MODELS = shipped_names("model")
from adabatch.models.vit import TokenEmbedding, _token_embedding_grad_sample
from adabatch_bench.pool_order import relu_before_pool

TINY = {
    "logistic": {},
    "mlp": {"hidden": (16, 8)},
    "cnn": {},
    "resnet18": {"width": 8},
    "resnet50": {"width": 8, "groups": 4},
    "vit": {"dim": 16, "depth": 2, "heads": 2},
}
IMAGE_MODELS = tuple(name for name in MODELS if name != "gpt")  # gpt reads token windows: tests/test_gpt.py

# (model, input shape, norm) combinations checked for exact per-example gradients.
PER_EXAMPLE_CASES = [
    ("logistic", (1, 8, 8), "group"),
    ("mlp", (1, 8, 8), "group"),
    ("cnn", (1, 8, 8), "group"),
    ("cnn", (3, 16, 16), "group"),
    ("resnet18", (3, 8, 8), "group"),
    ("resnet18", (3, 8, 8), "none"),
    ("resnet50", (3, 8, 8), "group"),
    ("resnet50", (3, 8, 8), "none"),
    ("vit", (3, 16, 16), "group"),
    ("vit", (1, 8, 8), "group"),
]
BATCH = 5
NUM_CLASSES = 4


def tiny_model(name: str, shape: tuple[int, int, int], norm: str = "group") -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, shape, NUM_CLASSES, norm=norm, **TINY[name])


def batch(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, *shape, generator=generator, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (BATCH,), generator=generator)
    return x, y


def brute_force_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*model.named_parameters())
    per_example = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        per_example.append(torch.autograd.grad(loss, params))
    return {name: torch.stack(grads) for name, grads in zip(names, zip(*per_example))}


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    assert actual.shape == expected.shape, name
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * scale, msg=name)


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_output_shape(name, shape):
    model = tiny_model(name, shape)
    assert model(torch.randn(3, *shape)).shape == (3, NUM_CLASSES)


def test_mnist_cnn_layout():
    model = build_model("cnn", (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1568, 10)]
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [16, 32]


def test_cifar_cnn_layout():
    model = build_model("cnn", (3, 32, 32), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 500), (500, 10)]
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [16, 32, 64]


@pytest.mark.parametrize(
    ("name", "norm", "expected"),
    [
        # Known counts of the CIFAR ResNets (kuangliu/pytorch-cifar); GroupNorm has the
        # same affine parameters as BatchNorm.
        ("resnet18", "batch", 11_173_962),
        ("resnet18", "group", 11_173_962),
        ("resnet50", "group", 23_520_842),
    ],
)
def test_resnet_parameter_count(name, norm, expected):
    model = build_model(name, (3, 32, 32), 10, norm=norm)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_norm_policy(name):
    group = build_model(name, (3, 16, 16), 10, norm="group", width=8)
    assert any(isinstance(m, nn.GroupNorm) for m in group.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.modules())
    assert all(m.bias is None for m in group.modules() if isinstance(m, nn.Conv2d))

    plain = build_model(name, (3, 16, 16), 10, norm="none", width=8)
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))


def test_make_norm_groups_adapt_to_channels():
    assert make_norm("group", 64, 32).num_groups == 32
    assert make_norm("group", 8, 32).num_groups == 8
    assert make_norm("group", 48, 32).num_groups == 24
    assert make_norm("group", 12, 8).num_groups == 6
    assert isinstance(make_norm("batch", 8), nn.BatchNorm2d)
    assert isinstance(make_norm("none", 8), nn.Identity)
    with pytest.raises(ValueError, match="model.norm='layer' is unknown"):
        make_norm("layer", 8)


def test_batch_norm_is_reported_by_opacus():
    model = build_model("resnet18", (3, 16, 16), 10, norm="batch", width=8)
    num_batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert num_batch_norms > 0
    errors = ModuleValidator.validate(model, strict=False)
    assert len(errors) == num_batch_norms
    assert all("BatchNorm" in str(e) for e in errors)


def test_unknown_values_are_rejected():
    with pytest.raises(ValueError, match=r"model='resnet34' is unknown; choose one of .*resnet18"):
        build_model("resnet34", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"model.depth is not a parameter of .*resnet18.*; its parameters are width, groups"):
        build_model("resnet18", (3, 32, 32), 10, depth=3)
    with pytest.raises(ValueError, match=r"model.groups is not a parameter of .*logistic_regression.*its parameters are none"):
        build_model("logistic", (1, 8, 8), 10, groups=4)
    with pytest.raises(ValueError, match="model.norm='layer' is unknown"):
        build_model("resnet18", (3, 32, 32), 10, norm="layer")
    with pytest.raises(ValueError, match="model.patch=5 must divide the image size 32x32"):
        build_model("vit", (3, 32, 32), 10, patch=5)
    with pytest.raises(ValueError, match="1 or 3 input channels"):
        build_model("cnn", (2, 32, 32), 10)


def test_model_options():
    def options(name):
        return tuple(Parameters(shipped("model", name)).named[2:])
    assert options("mlp") == ("hidden",)
    assert options("resnet18") == ("norm", "width", "groups")
    assert options("vit") == ("patch", "dim", "depth", "heads", "mlp_ratio", "dropout")


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_nothing_in_place(name, norm):
    model = build_model(name, (3, 32, 32), 10, norm=norm, **TINY[name])
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize(("name", "shape", "norm"), PER_EXAMPLE_CASES)
def test_per_example_gradients_match_brute_force(name, shape, norm):
    model = tiny_model(name, shape, norm).double()
    assert ModuleValidator.validate(model, strict=False) == []
    x, y = batch(shape)
    expected = brute_force_grads(model, x, y)

    wrapped = opacus.GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    F.cross_entropy(wrapped(x), y, reduction="sum").backward()
    for param_name, param in wrapped._module.named_parameters():
        assert_close_relative(param.grad_sample, expected[param_name], f"opacus {param_name}")

    def loss(params: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, params, (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0), reduction="sum")

    params = {k: v.detach() for k, v in model.named_parameters()}
    per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    assert per_example.keys() == expected.keys()
    for param_name, value in per_example.items():
        assert_close_relative(value, expected[param_name], f"torch.func {param_name}")


def test_vit_token_embedding_uses_registered_sampler():
    register_opacus_samplers()
    register_opacus_samplers()  # idempotent
    assert opacus.GradSampleModule.GRAD_SAMPLERS[TokenEmbedding] is _token_embedding_grad_sample
    wrapped = opacus.GradSampleModule(tiny_model("vit", (3, 16, 16)), loss_reduction="sum")
    # Opacus attaches this attribute only to layers it handles with its functorch fallback.
    assert not hasattr(wrapped._module.token_embedding, "ft_compute_sample_grad")


def test_building_models_does_not_import_opacus():
    script = (
        "import sys\n"
        "from adabatch.models import build_model\n"
        f"for name, options in {TINY!r}.items(): build_model(name, (3, 32, 32), 10, **options)\n"
        "assert 'opacus' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 16)])
def test_cnn_pools_before_its_relu_with_the_same_values_and_gradients(shape):
    torch.manual_seed(0)
    model = build_model("cnn", shape, NUM_CLASSES)
    textbook = relu_before_pool(model)
    assert [type(m) for m in textbook] != [type(m) for m in model]
    images = torch.randn(8, *shape).clamp_min(0)
    images[..., : shape[1] // 2, :] = 0  # blank rows: their windows tie at relu(bias), or all at 0
    labels = torch.randint(0, NUM_CLASSES, (8,))
    results = []
    for candidate in (model, textbook):
        loss = F.cross_entropy(candidate(images), labels)
        results.append([loss, *torch.autograd.grad(loss, list(candidate.parameters()))])
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(*results))
