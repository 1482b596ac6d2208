"""Building blocks for `train.parallel=fsdp`: shard a model with FSDP2, and checkpoint it.

`shard_model` applies `fully_shard` to each block of the given types, then to the root (the root
unit holds what no block holds, e.g. embeddings and a head tied to them: tied parameters must share a
unit). Checkpoints go through torch.distributed.checkpoint (DCP): every rank writes its own shards, and
`get_state_dict` / `set_state_dict` translate the sharded model and optimizer states (the optimizer's
keyed by parameter name), so a checkpoint loads into a fresh model whatever its initial values. The
directory appears whole or not at all: DCP writes into a sibling `.partial` directory, which rank 0
renames once every rank has finished.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ..distributed import World

METADATA = ".metadata"  # the file DCP writes last, once every rank's shards are in place


def block_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The module types a model names as its FSDP units (`fsdp_blocks`: transformer blocks, residual
    blocks); none: the root unit holds it all."""
    return tuple(getattr(model, "fsdp_blocks", ()))


def shard_model(model: nn.Module, world: World, block_types: tuple[type[nn.Module], ...] = (),
                reshard_after_forward: bool = True) -> nn.Module:
    """Shard `model` in place over the world's ranks (a 1-D mesh on the model's device type): each
    module of `block_types` becomes its own unit, gathered only while it runs; the root unit holds the
    rest. Returns the model (now an FSDPModule)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise ValueError("train.parallel=fsdp needs a process group: launch with torchrun")
    device_type = next(model.parameters()).device.type
    mesh = init_device_mesh(device_type, (world.size,))
    for module in list(model.modules())[1:]:
        if isinstance(module, block_types):
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def save_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, world: World) -> None:
    """Every rank writes its shards of the model and the optimizer state under `directory`, replacing
    a checkpoint already there only once the new one is complete."""
    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    if world.is_main and partial.exists():
        shutil.rmtree(partial)  # an earlier save that did not finish
    _barrier(world)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=partial)
    _barrier(world)
    if world.is_main:
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            directory.rename(old)
        partial.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    _barrier(world)


def load_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load `save_checkpoint`'s model and optimizer state into the sharded `model` and its `optimizer`
    (built as for the run that saved it: same model, world size may differ)."""
    directory = Path(directory)
    if not (directory / METADATA).is_file():
        raise FileNotFoundError(f"no FSDP checkpoint at {directory} (its {METADATA} is missing); "
                                "pass the directory save_checkpoint wrote")
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=directory)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def _barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
