"""model=gpt and the next_token task: shapes, causality, the tied head, and per-sequence gradients against a
float64 loop over sequences (autograd one sequence at a time, torch.func's vmap of grad, Opacus's hooks)."""
from __future__ import annotations

import copy
import inspect
import math

import opacus
import pytest
import torch
from helpers import compose
from omegaconf import OmegaConf
from torch.func import functional_call, grad, vmap

from adabatch.data import ArrayDataset
from adabatch.models import build_model, model_from_config
from adabatch.models.gpt import GPT, gpt
from adabatch.step import evaluation_totals
from adabatch.tasks import TASKS, task_of

VOCAB, BLOCK, N = 11, 6, 5
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 8, "block_size": BLOCK}
NEXT_TOKEN = TASKS["next_token"]


def tiny_gpt(seed: int = 0, **options) -> GPT:
    torch.manual_seed(seed)
    return gpt((BLOCK,), VOCAB, **{**TINY, **options}).double()


def token_batch(seed: int = 1, n: int = N, tokens: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    window = torch.randint(0, VOCAB, (n, tokens + 1), generator=g)
    window[0, :3] = window[0, -1]  # a sequence that repeats a token: its embedding row gets several δ_t
    return window[:, :-1], window[:, 1:]


def per_sequence_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """{name: (n, *shape)}: each sequence's gradient of its own loss, by autograd, one sequence at a time."""
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        NEXT_TOKEN.loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    return {name: torch.stack([g[name] for g in grads]) for name in grads[0]}


def test_shapes_and_shorter_sequences():
    model = tiny_gpt()
    for tokens in (BLOCK, 3, 1):
        x, _ = token_batch(tokens=tokens)
        assert model(x).shape == (N, tokens, VOCAB)
    with pytest.raises(ValueError, match="longer than model.block_size=6"):
        model(torch.zeros(2, BLOCK + 1, dtype=torch.int64))


def test_future_tokens_do_not_change_past_logits():
    model = tiny_gpt()
    x, _ = token_batch()
    logits = model(x)
    for t in range(BLOCK - 1):
        changed = x.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
        other = model(changed)
        torch.testing.assert_close(other[:, : t + 1], logits[:, : t + 1], rtol=0, atol=0)
        assert not torch.allclose(other[:, t + 1 :], logits[:, t + 1 :])  # the changed positions do see it


def test_the_head_is_the_token_embedding_one_parameter():
    model = tiny_gpt()
    assert model.lm_head.weight is model.wte.weight
    names = [name for name, _ in model.named_parameters()]
    assert "wte.weight" in names and "lm_head.weight" not in names  # listed (and optimized) once
    untied = tiny_gpt(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert sum(p.numel() for p in untied.parameters()) == sum(p.numel() for p in model.parameters()) + VOCAB * 8


def test_the_key_has_no_bias_and_bias_false_removes_the_others():
    model = tiny_gpt()
    assert model.h[0].attn.key.bias is None and model.h[0].attn.query.bias is not None
    plain = tiny_gpt(bias=False)
    assert all(not name.endswith(".bias") for name, _ in plain.named_parameters())


def test_summed_loss_gradient_is_the_sum_of_per_sequence_gradients():
    model = tiny_gpt()
    x, y = token_batch()
    outputs = model(x)
    loss = NEXT_TOKEN.loss(outputs, y)
    torch.testing.assert_close(NEXT_TOKEN.per_example_losses(outputs, y).sum(), loss, rtol=1e-14, atol=0)
    expected = torch.stack([
        torch.nn.functional.cross_entropy(outputs[i], y[i]) for i in range(N)  # mean over the sequence's tokens
    ])
    torch.testing.assert_close(NEXT_TOKEN.per_example_losses(outputs, y), expected, rtol=1e-14, atol=0)
    model.zero_grad()
    loss.backward()
    summed = {name: p.grad.clone() for name, p in model.named_parameters()}
    loop = per_sequence_loop(model, x, y)
    for name, per_sequence in loop.items():
        torch.testing.assert_close(per_sequence.sum(0), summed[name], rtol=1e-10, atol=1e-13, msg=name)
    assert loop["wte.weight"].abs().sum() > 0 and loop["wpe.weight"].abs().sum() > 0


def vmap_per_sequence(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def sequence_loss(params, buffers, xi, yi):
        return NEXT_TOKEN.loss(functional_call(model, (params, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    return vmap(grad(sequence_loss), in_dims=(None, None, 0, 0))(params, buffers, x, y)


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no-dropout", "dropout-in-eval"])
def test_torch_func_per_sequence_gradients_match_the_loop(dropout):
    model = tiny_gpt(dropout=dropout)
    if dropout:
        model.eval()  # dropout off: the masks a batched forward would draw are the step's business
    x, y = token_batch()
    loop = per_sequence_loop(model, x, y)
    by_vmap = vmap_per_sequence(model, x, y)
    assert set(by_vmap) == set(loop)
    for name, expected in loop.items():
        torch.testing.assert_close(by_vmap[name], expected, rtol=1e-10, atol=1e-13, msg=name)


@pytest.mark.filterwarnings("ignore")
def test_opacus_per_sequence_gradients_match_the_loop_tied_head_included():
    model = tiny_gpt()
    x, y = token_batch()
    loop = per_sequence_loop(model, x, y)
    wrapped = opacus.GradSampleModule(copy.deepcopy(model), batch_first=True, loss_reduction="sum")
    NEXT_TOKEN.loss(wrapped(x), y).backward()
    for name, p in wrapped._module.named_parameters():
        torch.testing.assert_close(p.grad_sample, loop[name], rtol=1e-10, atol=1e-13, msg=name)


def test_tied_weight_gradient_adds_both_uses_per_sequence_before_any_square():
    """The tied parameter's g_i is the embedding's part plus the head's part of the same sequence."""
    tied = tiny_gpt()
    untied = tiny_gpt(tie_embeddings=False)
    untied.load_state_dict({**tied.state_dict(), "lm_head.weight": tied.wte.weight.detach().clone()})
    x, y = token_batch()
    torch.testing.assert_close(untied(x), tied(x), rtol=0, atol=0)
    tied_grads, parts = per_sequence_loop(tied, x, y), per_sequence_loop(untied, x, y)
    both = parts["wte.weight"] + parts["lm_head.weight"]
    torch.testing.assert_close(tied_grads["wte.weight"], both, rtol=1e-10, atol=1e-13)
    squared = tied_grads["wte.weight"].flatten(1).square().sum(1)
    separately = parts["wte.weight"].flatten(1).square().sum(1) + parts["lm_head.weight"].flatten(1).square().sum(1)
    assert not torch.allclose(squared, separately)


def test_next_token_evaluation_is_nats_per_token_and_perplexity():
    model = tiny_gpt()
    x, y = token_batch()
    outputs = model(x)
    halves = NEXT_TOKEN.evaluation_totals(outputs[:2], y[:2]) + NEXT_TOKEN.evaluation_totals(outputs[2:], y[2:])
    metrics = NEXT_TOKEN.metrics(halves)
    nats = torch.nn.functional.cross_entropy(outputs.reshape(-1, VOCAB), y.reshape(-1)).item()
    assert metrics["loss"] == pytest.approx(nats, rel=1e-13)
    assert metrics["perplexity"] == pytest.approx(math.exp(nats), rel=1e-13)
    assert halves[1].item() == N * BLOCK and halves[2].item() == N
    assert NEXT_TOKEN.metric == "perplexity" and NEXT_TOKEN.best([3.0, 2.0, 2.5]) == 2.0


def test_classification_task_gives_the_numbers_of_todays_evaluation():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 4, 4), 3, hidden=[5])
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(7, 1, 4, 4, generator=g), torch.randint(0, 3, (7,), generator=g)) for _ in range(3)]
    task = TASKS["classification"]
    with torch.no_grad():
        totals = sum(task.evaluation_totals(model(x), y) for x, y in batches)
        losses = [task.per_example_losses(model(x), y) for x, y in batches]
        assert all(torch.allclose(l.sum(), task.loss(model(x), y)) for l, (x, y) in zip(losses, batches))
    assert torch.equal(totals, evaluation_totals(model, batches))
    assert task.metrics(totals)["acc"] == totals[1].item() / 21 and task.best([0.5, 0.7]) == 0.7


def test_datasets_declare_their_task():
    images = ArrayDataset("random", torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64),
                          torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64), 2, 255.0,
                          (0.0,), (1.0,))
    assert task_of(images) is TASKS["classification"] and images.pixels and images.tokens_per_example is None


def test_registered_and_its_config_mirrors_the_builder():
    cfg = compose("dataset=text", "model=gpt")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert set(model_cfg) - {"_target_", "name"} == {p.name for p in inspect.signature(gpt).parameters.values() if p.kind is p.KEYWORD_ONLY}
    model = model_from_config(model_cfg, (64,), 256)
    assert isinstance(model, GPT) and model.block_size == 64 and model.vocab_size == 256
    assert isinstance(build_model("gpt", (8,), 256, **TINY | {"block_size": 8}), GPT)


@pytest.mark.parametrize(("options", "shape", "message"), [
    ({"n_head": 3}, (BLOCK,), "model.n_head=3 must divide model.n_embd=8"),
    ({"n_layer": 0}, (BLOCK,), "model.n_layer=0 must be an integer >= 1"),
    ({"dropout": 1.0}, (BLOCK,), "model.dropout=1.0 must be a number in [0, 1)"),
    ({"vocab_size": 5}, (BLOCK,), "model.vocab_size=5 is below the dataset's 11 tokens"),
    ({}, (BLOCK + 1,), "model.block_size=6 is below dataset.block_size=7"),
    ({}, (1, 8, 8), "model=gpt reads token windows, not inputs of shape (1, 8, 8); use dataset=text"),
])
def test_bad_options_name_the_key(options, shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        gpt(shape, VOCAB, **{**TINY, **options})
