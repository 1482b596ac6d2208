"""Every rank's view of tested and plain steps, for tests/test_distributed.py.

Run by the test under `torchrun --nproc_per_node=N tests/ranks_worker.py OUT_DIR`: each rank saves
what `collect` finds to OUT_DIR/rank<k>.pt. The test calls `collect(SINGLE_PROCESS)` itself for the
reference: the same batches, unsplit, in one process.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from helpers import MODELS, tiny_problem
from torch.nn.parallel import DistributedDataParallel

from adabatch.data import evaluation_batches
from adabatch.distributed import World, join_process_group, run_as_rank
from adabatch.stats import ENGINES, IP_MODES, Needs, build_engine, gradient_with_statistics
from adabatch.step import accumulate_gradient, evaluation_totals

BATCH_SIZES = (14, 13)  # shares of 7/7 and 7/6 examples on two ranks
MAX_MICROS = (14, 3)    # one micro-batch per rank, and several of uneven sizes


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def collect(world: World) -> dict[tuple, dict[str, torch.Tensor]]:
    found = {}
    everything = Needs(inner_products=True, coordinates=True)
    for model_key in MODELS:
        for batch_size in BATCH_SIZES:
            for engine_name in ENGINES:
                model, data, batch = tiny_problem(model_key, batch_size=batch_size)
                engine = build_engine(engine_name, model)  # a fresh model: Opacus' hooks would break torch.func
                for max_micro in MAX_MICROS:
                    for ip_mode in IP_MODES:
                        model.zero_grad(set_to_none=True)
                        loss, s = gradient_with_statistics(
                            engine, data, batch, max_micro, everything, ip_mode, None, world
                        )
                        world.sum_([loss])
                        found[(model_key, batch_size, engine_name, max_micro, ip_mode)] = {
                            "loss": loss,
                            "statistics": torch.tensor([s.grad_sq_norm, s.norm_var, s.ip_var, s.orth_var]),
                            "coord_var": torch.cat([v.flatten() for v in s.coord_var]),
                            "grad": flat_grad(model),
                        }

            model, data, batch = tiny_problem(model_key, batch_size=batch_size)
            step_model = DistributedDataParallel(model) if world.size > 1 else model
            for max_micro in MAX_MICROS:
                model.zero_grad(set_to_none=True)
                loss = accumulate_gradient(step_model, data, batch, max_micro, None, world)
                world.sum_([loss])
                found[(model_key, batch_size, "plain", max_micro)] = {"loss": loss, "grad": flat_grad(model)}

        totals = evaluation_totals(model, evaluation_batches(data.dataset, "test", 3, "cpu", None, world.rank, world.size))
        world.sum_([totals])
        found[(model_key, "evaluation")] = {"totals": totals}
    return found


if __name__ == "__main__":
    world = join_process_group()
    run_as_rank(lambda: torch.save(collect(world), Path(sys.argv[1]) / f"rank{world.rank}.pt"))
