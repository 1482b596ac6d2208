import pytest
import torch

from adabatch.components import shipped_names
from adabatch.optim import AdaGradNorm, build_optimizer


def test_adagrad_norm_matches_a_float64_loop_over_steps():
    torch.manual_seed(0)
    weights = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(5, dtype=torch.float64, requires_grad=True)]
    expected = [w.detach().clone() for w in weights]
    lr, v0 = 0.3, 0.5
    optimizer = AdaGradNorm(weights, lr=lr, initial_accumulator_value=v0)
    v = v0
    for _ in range(4):
        grads = [torch.randn_like(w) for w in weights]
        for w, g in zip(weights, grads):
            w.grad = g.clone()
        optimizer.step()
        v += sum(float((g * g).sum()) for g in grads)
        expected = [x - lr * g / v**0.5 for x, g in zip(expected, grads)]
        for w, e in zip(weights, expected):
            torch.testing.assert_close(w.detach(), e, rtol=1e-13, atol=1e-13)


def test_adagrad_norm_shares_one_accumulator_across_param_groups_and_survives_state_dict():
    a = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    optimizer = AdaGradNorm([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=1.0, initial_accumulator_value=1.0)
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([0.0, 4.0], dtype=torch.float64)
    optimizer.step()  # v = 1 + 9 + 16 = 26
    torch.testing.assert_close(a.detach(), torch.tensor([1 - 3 / 26**0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([1.0, 1 - 0.5 * 4 / 26**0.5], dtype=torch.float64))

    restored = AdaGradNorm([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=1.0, initial_accumulator_value=1.0)
    restored.load_state_dict(optimizer.state_dict())
    assert float(restored.state[a]["norm_sq_sum"]) == 26.0


def test_adagrad_norm_rejects_non_positive_v0():
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        AdaGradNorm([torch.nn.Parameter(torch.ones(1))], initial_accumulator_value=0.0)


@pytest.mark.parametrize("name", shipped_names("optimizer"))
def test_build_optimizer_by_name(name):
    params = [torch.nn.Parameter(torch.ones(2))]
    optimizer = build_optimizer({"name": name, "lr": 0.05}, params)
    assert optimizer.param_groups[0]["lr"] == 0.05
    expected = {"adagrad": torch.optim.Adagrad, "adagrad_norm": AdaGradNorm, "adam": torch.optim.Adam,
                "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "sgdm": torch.optim.SGD}[name]
    assert type(optimizer) is expected


def test_unknown_optimizer_is_named_in_the_error():
    with pytest.raises(ValueError, match="optimizer='lion' is unknown"):
        build_optimizer({"name": "lion", "lr": 0.1}, [torch.nn.Parameter(torch.ones(1))])
