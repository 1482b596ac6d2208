"""Every rank's view of the test from local gradients, and of an FSDP checkpoint, for tests/test_local_ranks.py.

Run by the test under `torchrun --nproc_per_node=2 tests/parts_worker.py OUT_DIR`: each rank saves
what it found to OUT_DIR/rank<k>.pt. The test computes the reference itself, on an unsharded copy of
the model in one process. The model is tiny and float64, with an embedding tied to its output head.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
from torch.nn.parallel import DistributedDataParallel

from adabatch.distributed import World, join_process_group, run_as_rank
from adabatch.parallel.fsdp import load_checkpoint, save_checkpoint, shard_model
from adabatch.parallel.local_step import gradient_with_part_statistics
from adabatch.step import synchronized
from adabatch.parallel.part_capture import PartCapture
from adabatch.stats import Needs
from adabatch.stats.local import reduce_part_statistics

BATCH, LENGTH, VOCAB, MICRO_BATCHES = 11, 6, 13, 2
EVERYTHING = Needs(inner_products=True, coordinates=True)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(self.linear(h))


class TiedNet(nn.Module):
    """Embedding, two blocks, and a head that is the embedding (FSDP: the blocks are units of their own,
    the tied pair sits in the root unit)."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, dim)
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.head = nn.Linear(dim, VOCAB, bias=False)
        self.head.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embedding(tokens)))


def new_model(seed: int = 0) -> TiedNet:
    torch.manual_seed(seed)
    return TiedNet().double()


def summed_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean next-token loss, summed over the sequences."""
    logits = model(tokens[:, :-1])
    per_token = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return per_token.view(len(tokens), -1).mean(1).sum()


def global_batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, LENGTH), generator=torch.Generator().manual_seed(seed))


def micro_batches(tokens: torch.Tensor, rank: int, world_size: int) -> list[torch.Tensor]:
    """This rank's contiguous share of the batch, split into MICRO_BATCHES parts (sizes 3/3 and 3/2 for 11)."""
    return list(torch.tensor_split(torch.tensor_split(tokens, world_size)[rank], MICRO_BATCHES))


def local_capture(model: nn.Module, capture: PartCapture, world: World, tokens: torch.Tensor):
    """One step by hand, to read this rank's sums before the all-reduce; then the global statistics."""
    sums = capture.new_sums()
    capture.attach(sums)
    parts = micro_batches(tokens, world.rank, world.size)
    for k, part in enumerate(parts):
        with synchronized(model, k == len(parts) - 1), capture.part(len(part), world.size / BATCH):
            (summed_loss(model, part) * world.size / BATCH).backward()
    local = {"sq_norm": sums.sq_norm.clone(), "counts": sums.counts.clone()}
    return local, sums


def statistics_fields(s) -> dict[str, torch.Tensor]:
    found = {"scalars": torch.tensor([s.batch_size, s.grad_sq_norm, s.norm_var], dtype=torch.float64)}
    if s.ip_var is not None:
        found["ip"] = torch.tensor([s.ip_var, s.orth_var], dtype=torch.float64)
    if s.coord_var is not None:
        found["coord_var"] = torch.cat([v.flatten() for v in s.coord_var])
    return found


def ddp(world: World) -> dict:
    model = new_model()
    wrapped = DistributedDataParallel(model)
    capture = PartCapture(wrapped, EVERYTHING)
    tokens = global_batch()
    local, sums = local_capture(wrapped, capture, world, tokens)
    mean_grad = [p.grad for p in capture.params]
    by_hand = reduce_part_statistics(sums, mean_grad, world, "global", capture.kept)
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    loss, stepped = gradient_with_part_statistics(wrapped, capture, micro_batches(tokens, world.rank, world.size),
                                                  summed_loss, BATCH, world)
    capture.detach()
    return {"local": local, "by_hand": statistics_fields(by_hand), "step": statistics_fields(stepped), "grad": grad,
            "loss": loss}


def fsdp(world: World) -> dict:
    model = shard_model(new_model(), world, (Block,))
    capture = PartCapture(model, Needs())
    tokens = global_batch()
    local, _ = local_capture(model, capture, world, tokens)
    model.zero_grad(set_to_none=True)
    loss, stepped = gradient_with_part_statistics(model, capture, micro_batches(tokens, world.rank, world.size),
                                                  summed_loss, BATCH, world)
    grad = torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()])  # for the test only
    refused = ""
    try:
        PartCapture(model, Needs(coordinates=True))
    except ValueError as error:
        refused = str(error)
    return {"local": local, "step": statistics_fields(stepped), "grad": grad, "refused": refused, "loss": loss}


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {"model": get_model_state_dict(model, options=options),
            "optimizer": get_optimizer_state_dict(model, optimizer, options=options)}


def adam_steps(model: nn.Module, optimizer: torch.optim.Optimizer, world: World, seeds) -> None:
    for seed in seeds:
        optimizer.zero_grad(set_to_none=True)
        part = torch.tensor_split(global_batch(seed), world.size)[world.rank]
        (summed_loss(model, part) * world.size / BATCH).backward()
        optimizer.step()


def checkpoint(world: World, directory: Path) -> dict:
    model = shard_model(new_model(), world, (Block,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    adam_steps(model, optimizer, world, seeds=[1])
    save_checkpoint(directory, model, optimizer, world)  # replaced below: a later save wins
    adam_steps(model, optimizer, world, seeds=[2])
    save_checkpoint(directory, model, optimizer, world)
    saved = full_state(model, optimizer)

    fresh = shard_model(new_model(seed=7), world, (Block,))
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2, weight_decay=0.1)
    before = full_state(fresh, fresh_optimizer)
    load_checkpoint(directory, fresh, fresh_optimizer)
    loaded = full_state(fresh, fresh_optimizer)
    adam_steps(model, optimizer, world, seeds=[3])
    adam_steps(fresh, fresh_optimizer, world, seeds=[3])
    return {"saved": saved, "before": before, "loaded": loaded,
            "next": full_state(model, optimizer), "next_loaded": full_state(fresh, fresh_optimizer),
            "files": sorted(p.name for p in directory.parent.iterdir() if not p.name.startswith("rank"))}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    world = join_process_group()

    def save_findings() -> None:
        found = {"ddp": ddp(world), "fsdp": fsdp(world), "checkpoint": checkpoint(world, out / "checkpoint")}
        torch.save(found, out / f"rank{world.rank}.pt")

    run_as_rank(save_findings)
