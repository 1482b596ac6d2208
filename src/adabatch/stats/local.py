"""The tests' statistics from the parts of a batch, without per-example gradients (paper-notes §5).

A batch of b examples is split into M parts (data-parallel ranks and, when accumulating, their
micro-batches) of sizes b_1..b_M with part-mean gradients g_m; ḡ = Σ_m (b_m / b) g_m. Every statistic
of the per-example tests has a between-parts counterpart with M − 1 degrees of freedom:

    V̂      = Σ_m b_m ‖g_m − ḡ‖² / (M − 1)              = (Σ_m b_m ‖g_m‖² − b‖ḡ‖²) / (M − 1)
    V̂_j    = Σ_m b_m (g_mj − ḡ_j)² / (M − 1)            = (Σ_m b_m g_mj² − b ḡ_j²) / (M − 1)
    V̂_ip   = Σ_m b_m (⟨g_m, ḡ⟩ − ‖ḡ‖²)² / (M − 1)       = (Σ_m b_m ⟨g_m, ḡ⟩² − b‖ḡ‖⁴) / (M − 1)
    V̂_orth = Σ_m b_m ‖r_m‖² / (M − 1), r_m = g_m − ⟨g_m, ḡ⟩/‖ḡ‖² ḡ = (Σ_m b_m ‖g_m‖² − Σ_m b_m ⟨g_m, ḡ⟩²/‖ḡ‖²) / (M − 1)

(the scalar ⟨g_i, ḡ⟩ and the residual r_i are linear in g_i for the batch's ḡ, so their part means are
⟨g_m, ḡ⟩ and r_m, and the residuals' mean is zero). Each is unbiased for the per-example statistic both
for i.i.d. examples and over the random splits of one fixed batch (parts drawn without replacement:
E‖g_m − ḡ‖² = (b − b_m) V / (b b_m), which sums to (M − 1) V). With parts of one example each they
are the per-example statistics exactly.

The sums are additive over parts, so ranks all-reduce a few scalars (the counts and Σ_m b_m ‖g_m^t‖²
per parameter tensor) and, for the coordinate-wise test only, one parameter-sized Σ_m b_m g_m⊙g_m.
The inner-product sums need the final ḡ, so each part's gradient must outlive the all-reduce; they are
added in a second phase, as in `GradientSums`. The results are `BatchStatistics`, which the policies
consume unchanged.
"""
from __future__ import annotations

import torch

from ..distributed import SINGLE_PROCESS, World
from .statistics import BatchStatistics, check_ip_mode, closing_statistics
from .sums import Needs, squared_norms


class PartSums:
    """Σ over parts m of b_m-weighted squares of the part-mean gradients g_m, per parameter tensor t."""

    def __init__(self, shapes: list[torch.Size], needs: Needs, device: torch.device | str = "cpu") -> None:
        self.needs = needs
        self.shapes = list(shapes)
        num_tensors = len(self.shapes)
        self.counts = torch.zeros(2, dtype=torch.float64, device=device)  # (b = Σ_m b_m, M); float64 is exact here
        self.sq_norm = torch.zeros(num_tensors, dtype=torch.float64, device=device)  # Σ_m b_m ‖g_m^t‖²
        self.coord_sq = ([torch.zeros(s, dtype=torch.float64, device=device) for s in self.shapes]
                         if needs.coordinates else None)  # Σ_m b_m g_m⊙g_m
        self.ip_sq = torch.zeros(num_tensors, dtype=torch.float64, device=device)  # Σ_m b_m ⟨g_m^t, ḡ^t⟩²
        self.global_ip_sq = torch.zeros((), dtype=torch.float64, device=device)  # Σ_m b_m ⟨g_m, ḡ⟩²
        self.inner_products_added = False

    @property
    def count(self) -> int:
        return int(self.counts[0])

    @property
    def parts(self) -> int:
        return int(self.counts[1])

    def add_part(self, size: int, part_grad: list[torch.Tensor]) -> None:
        """Add a part of `size` examples given its mean gradient g_m (one tensor per parameter)."""
        self.open_part(size)
        for t, g in enumerate(part_grad):
            self.add_tensor(t, size, g)

    def open_part(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a part of a batch needs at least one example, got size {size}")
        self.counts += torch.tensor([size, 1], dtype=torch.float64, device=self.counts.device)

    def add_tensor(self, t: int, size: int, part_grad: torch.Tensor, scale: float = 1.0) -> None:
        """Add parameter tensor t of an opened part: g_m^t = scale · part_grad. With scale, a captured
        gradient contribution is used as it comes, with no scaled copy of it."""
        weight = size * scale * scale
        norm = torch.linalg.vector_norm(part_grad, dtype=torch.float64)
        self.sq_norm[t].addcmul_(norm, norm, value=weight)
        if self.coord_sq is not None:
            self.coord_sq[t].addcmul_(part_grad, part_grad, value=weight)

    def first_phase(self) -> list[torch.Tensor]:
        """The float64 sums to all-reduce across ranks before ḡ is known."""
        return [self.counts, self.sq_norm, *(self.coord_sq or [])]

    def add_inner_products(self, size: int, part_grad: list[torch.Tensor | None], mean_grad: list[torch.Tensor],
                           scale: float = 1.0) -> None:
        """Second phase: a part's ⟨g_m^t, ḡ^t⟩ terms (g_m = scale · part_grad), once ḡ is known."""
        zero = torch.zeros((), dtype=torch.float64, device=self.ip_sq.device)
        per_tensor = torch.stack([  # None: the part gave tensor t no gradient
            zero if g is None else torch.dot(g.flatten().double(), m.flatten().double()) for g, m in zip(part_grad, mean_grad)
        ]) * scale
        self.ip_sq += size * per_tensor.pow(2)
        self.global_ip_sq += size * per_tensor.sum().pow(2)
        self.inner_products_added = True

    def second_phase(self) -> list[torch.Tensor]:
        return [self.ip_sq, self.global_ip_sq]


def part_statistics(sums: PartSums, mean_grad: list[torch.Tensor] | None = None, ip_mode: str = "global",
                    tensor_sq: torch.Tensor | None = None) -> BatchStatistics:
    """The tests' statistics of the whole batch from its parts' sums (all ranks' sums, after the
    all-reduce). ḡ comes as `mean_grad` or, where it is sharded (FSDP), as `tensor_sq`: the float64
    ‖ḡ^t‖² per parameter tensor, summed over the shards (the norm test needs no more). The
    per-coordinate variances are made in place from the sums: take the statistics once."""
    check_ip_mode(ip_mode)
    b, parts = sums.count, sums.parts
    if parts < 2:
        raise ValueError(f"the test from part gradients needs at least 2 parts (ranks x micro-batches), got {parts}; "
                         "use more ranks or a smaller batch_size.max_micro")
    if tensor_sq is None:
        if mean_grad is None:
            raise ValueError("part_statistics needs the batch gradient: pass mean_grad, or tensor_sq where it is sharded")
        tensor_sq = squared_norms(mean_grad, sums.sq_norm.device)
    if sums.needs.inner_products and not sums.inner_products_added:
        raise ValueError("the inner-product tests need each part's gradient after the all-reduce (add_inner_products); "
                         "keep the part gradients, or use the norm test")
    if sums.coord_sq is not None and mean_grad is None:
        raise ValueError("the coordinate-wise test needs the whole batch gradient ḡ per coordinate: pass mean_grad")
    return closing_statistics(sums, b, parts - 1, tensor_sq, mean_grad, ip_mode)


def reduce_part_statistics(sums: PartSums, mean_grad: list[torch.Tensor], world: World = SINGLE_PROCESS,
                           ip_mode: str = "global", kept: list[tuple[int, list[torch.Tensor], float]] = (),
                           riders: list[torch.Tensor] = ()) -> BatchStatistics:
    """The statistics of the global batch, identical on every rank: all-reduce the first-phase sums,
    add the kept parts' inner products (`kept`: (size, part gradient, scale) per local part) with the
    final ḡ, all-reduce those, and take the statistics. `mean_grad` is ḡ (DDP's averaged .grad).
    `riders`: more float64 tensors summed over ranks in the first phase's collective (the step's loss),
    so that a tested step synchronizes the ranks no more often than a plain one."""
    local_parts = sums.parts
    if sums.needs.inner_products and len(kept) != local_parts:
        raise ValueError(f"the inner-product tests need every part's gradient after the all-reduce: {len(kept)} "
                         f"of this rank's {local_parts} parts were kept")
    world.sum_([*sums.first_phase(), *riders])
    if sums.needs.inner_products:
        for size, part_grad, scale in kept:
            sums.add_inner_products(size, part_grad, mean_grad, scale)
        sums.inner_products_added = True  # also on a rank with no part (nothing to add)
        world.sum_(sums.second_phase())
    return part_statistics(sums, mean_grad, ip_mode)
