"""Each part's gradient as backward produces it, reduced to `PartSums` on the spot: no second backward.

A part is one backward: a micro-batch of an accumulating step, on one rank. A tensor hook on each
parameter (`register_hook`) receives that backward's gradient of the parameter before it is added to
.grad, so the hook sees the part's own contribution c and squares it there: the norm test needs no
parameter-sized copy at all (not the "grad after minus grad before" difference, which needs one), the
coordinate-wise test one float64 sum, and only the inner-product tests keep each part's c (a
reference to the tensor autograd hands the hook, kept until ḡ is known).

The same hooks serve the three settings, because each fires before anything is communicated:
- one process: the micro-batches of a step are the parts;
- DDP: DDP's reducer hooks run after a parameter's gradient is accumulated, the tensor hooks before,
  so they see the rank's local contribution before the all-reduce, for every micro-batch (also under
  `no_sync`). This gives ranks x micro-batches parts, where a communication hook on DDP's buckets would
  see one bucket per rank per step (after the last micro-batch: W parts), and `no_sync` with an own
  all-reduce would give up DDP's overlap of communication with backward;
- FSDP2 (`fully_shard`): the parameters the model holds are shards; during forward and backward the
  modules hold unsharded parameters (the same tensor objects every step), so the hooks are registered
  on those from forward pre-hooks and see the rank's local unsharded gradient before the
  reduce-scatter. No full gradient is gathered.

A parameter is a leaf, so autograd adds the contributions of all its uses (a tied embedding and
head) before its hook runs: the hook fires once per backward with their sum, and the sum is what is
squared. A second firing within one part (two backward calls in one part) is refused.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..stats.local import PartSums
from ..stats.sums import Needs


def is_fully_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


class PartCapture:
    """Hooks on `model`'s trainable parameters that add each part's gradient to `sums`, between
    `attach` and `detach`; parts are opened with `part`. Gradients outside a part are left alone."""

    def __init__(self, model: nn.Module, needs: Needs) -> None:
        module = model.module if isinstance(model, DistributedDataParallel) else model
        self.sharded = is_fully_sharded(module)
        if self.sharded and (needs.coordinates or needs.inner_products):
            raise ValueError("under FSDP only the norm test (and gns) can come from local gradients: the coordinate-wise "
                             "and inner-product tests would hold unsharded copies of the model on every rank")
        self.module = module
        self.needs = needs
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.names = [name for name, p in module.named_parameters() if p.requires_grad]
        self.sums: PartSums | None = None
        self.kept: list[tuple[int, list[torch.Tensor | None], float]] = []  # (size, c per tensor, scale) per part
        self._handles: list = []
        self._hooked: dict[int, tuple[torch.Tensor, int]] = {}  # id -> (tensor, index): the tensor held so ids stay unique
        self._part: tuple[int, float] | None = None  # (size, scale) of the open part
        self._seen: set[int] = set()
        self._part_grads: list[torch.Tensor | None] = []

    def new_sums(self) -> PartSums:
        device = self.params[0].device
        return PartSums([p.shape for p in self.params], self.needs, device)

    def attach(self, sums: PartSums) -> None:
        """Start capturing into `sums` (fresh for each tested step)."""
        self.sums, self.kept = sums, []
        if self._handles:
            return
        if not self.sharded:
            for t, p in enumerate(self.params):
                self._hook(p, t)
            return
        index = {id(p): t for t, p in enumerate(self.params)}
        names = {name: index[id(p)] for name, p in self.module.named_parameters(remove_duplicate=False) if id(p) in index}
        for prefix, submodule in self.module.named_modules():
            own = {n: names[f"{prefix}.{n}" if prefix else n] for n, _ in submodule.named_parameters(recurse=False)
                   if (f"{prefix}.{n}" if prefix else n) in names}
            if own:
                self._handles.append(submodule.register_forward_pre_hook(self._unsharded_hooks(own)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._hooked, self.sums = [], {}, None

    @contextlib.contextmanager
    def part(self, size: int, loss_scale: float) -> Iterator[None]:
        """One part of `size` examples whose backward runs inside the block, on loss_scale x (the part's
        summed loss): e.g. loss_scale = world_size / b in `accumulate_gradient`, 1 / size for a part's
        mean loss. Its mean gradient is then g_m = c / (loss_scale · size)."""
        if self.sums is None:
            raise RuntimeError("PartCapture.part outside attach(sums) ... detach()")
        self.sums.open_part(size)
        self._part, self._seen = (size, 1.0 / (loss_scale * size)), set()
        self._part_grads = [None] * len(self.params)
        try:
            yield
        finally:
            size, scale = self._part
            self._part = None
        if self.sharded and len(self._hooked) < len(self.params):
            hooked = {t for _, t in self._hooked.values()}
            missing = next(self.names[t] for t in range(len(self.params)) if t not in hooked)
            raise RuntimeError(f"parameter {missing} was never seen unsharded in a module's forward: its local gradient "
                               "cannot be captured under FSDP")
        if self.needs.inner_products:
            self.kept.append((size, self._part_grads, scale))
        self._part_grads = []

    def _unsharded_hooks(self, own: dict[str, int]):
        def register(submodule: nn.Module, args) -> None:
            for name, t in own.items():
                self._hook(getattr(submodule, name), t)
        return register

    def _hook(self, p: torch.Tensor, t: int) -> None:
        if id(p) in self._hooked:
            return
        if not p.is_leaf:
            raise ValueError(f"parameter {self.names[t]} is not a leaf tensor here: its hook would fire once per use, "
                             "and the uses must be added before squaring")
        self._hooked[id(p)] = (p, t)
        self._handles.append(p.register_hook(lambda grad: self._on_gradient(t, grad)))

    def _on_gradient(self, t: int, grad: torch.Tensor) -> None:
        if self._part is None:
            return
        if t in self._seen:
            raise RuntimeError(f"parameter {self.names[t]} received two gradients in one part: run one backward per part")
        self._seen.add(t)
        size, scale = self._part
        self.sums.add_tensor(t, size, grad, scale)
        if self.needs.inner_products:
            self._part_grads[t] = grad  # a reference: autograd then accumulates a copy into .grad, not this tensor
