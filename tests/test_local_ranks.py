"""The test from local gradients with real ranks (torchrun, gloo on the CPU): under DDP and under FSDP2 the
hooks see each rank's own micro-batch gradients before they are communicated, and the statistics are the
definitions over all ranks' parts, computed here on an unsharded copy of the model in one process. Also
an FSDP2 checkpoint through torch.distributed.checkpoint round-trips model and optimizer exactly.
One torchrun launch serves every test in this file."""
from __future__ import annotations

import pytest
import torch
from parts_worker import BATCH, global_batch, micro_batches, new_model, summed_loss
from test_distributed import finish, torchrun
from test_local_parts import definitions

WORLD = 2
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts")
    code, stderr = finish(torchrun(WORLD, "tests/parts_worker.py", str(out)))
    assert code == 0, stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference():
    """Each rank's micro-batches' mean gradients, one backward each, on an unsharded model in one process."""
    model = new_model()
    params = list(model.parameters())
    parts, sizes, local_sq = [], [], []
    with torch.no_grad():
        loss = summed_loss(model, global_batch()) / BATCH
    for rank in range(WORLD):
        sq = torch.zeros(len(params), dtype=torch.float64)
        for part in micro_batches(global_batch(), rank, WORLD):
            model.zero_grad(set_to_none=True)
            (summed_loss(model, part) / len(part)).backward()
            parts.append(torch.cat([p.grad.flatten() for p in params]))
            sizes.append(len(part))
            sq += len(part) * torch.stack([p.grad.pow(2).sum() for p in params])
        local_sq.append(sq)
    return {"local_sq": local_sq, "sizes": sizes, "loss": loss,
            "stats": definitions(parts, sizes, [p.numel() for p in params])}


def assert_statistics(found: dict, expected: dict, with_inner_products: bool) -> None:
    b, grad_sq, norm_var = found["scalars"].tolist()
    assert b == BATCH
    assert grad_sq == pytest.approx(float(expected["grad_sq_norm"]), rel=1e-12)
    assert norm_var == pytest.approx(float(expected["norm_var"]), rel=1e-10)
    if with_inner_products:
        ip_var, orth_var = found["ip"].tolist()
        assert ip_var == pytest.approx(float(expected["ip_var"]), rel=1e-9)
        assert orth_var == pytest.approx(float(expected["orth_var"]), rel=1e-9)
        torch.testing.assert_close(found["coord_var"], expected["coord_var"], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_each_rank_captures_its_own_parts_before_they_are_communicated(parallel, ranks, reference):
    for rank in range(WORLD):
        local = ranks[rank][parallel]["local"]
        torch.testing.assert_close(local["sq_norm"], reference["local_sq"][rank], rtol=1e-12, atol=0.0)
        assert local["counts"].tolist() == [sum(reference["sizes"][2 * rank: 2 * rank + 2]), 2]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_all_ranks_hold_the_statistics_of_the_global_batch_from_its_parts(parallel, ranks, reference):
    with_inner_products = parallel == "ddp"
    for rank in range(WORLD):
        found = ranks[rank][parallel]
        torch.testing.assert_close(found["grad"], reference["stats"]["gbar"], rtol=1e-12, atol=1e-15)
        assert_statistics(found["step"], reference["stats"], with_inner_products)
        if parallel == "ddp":
            assert_statistics(found["by_hand"], reference["stats"], with_inner_products)
        for key, value in found["step"].items():
            assert torch.equal(value, ranks[0][parallel]["step"][key])  # the ranks take the same decision
        # the global batch's mean loss, summed over ranks in the statistics' own collective
        torch.testing.assert_close(found["loss"], reference["loss"], rtol=1e-12, atol=0.0, check_dtype=False)
        assert torch.equal(found["loss"], ranks[0][parallel]["loss"])


def test_under_fsdp_the_tests_that_need_unsharded_copies_are_refused(ranks):
    assert ranks[0]["fsdp"]["refused"].startswith("under FSDP only the norm test (and gns) can come from local gradients")


def equal_states(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal_states(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal_states(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def test_an_fsdp_checkpoint_round_trips_model_and_optimizer_exactly(ranks):
    found = ranks[0]["checkpoint"]  # full state dicts are gathered on rank 0
    assert found["files"] == ["checkpoint"]  # no .partial or .old directory left behind
    assert found["saved"]["optimizer"]["state"]  # AdamW has moments to restore
    assert not equal_states(found["before"], found["saved"])  # the fresh model started elsewhere
    assert equal_states(found["loaded"], found["saved"])
    assert equal_states(found["next_loaded"], found["next"])  # and the next step is the same step
