"""A small Vision Transformer for CIFAR-sized images.

Every parameter lives in a module Opacus knows (Conv2d, Linear, LayerNorm) or
in ``TokenEmbedding``, which states its own per-example gradients (registered with Opacus by
``register_opacus_samplers``). Attention is written with plain ``nn.Linear``
layers rather than ``nn.MultiheadAttention`` so that stock Opacus samplers and
``torch.func`` both apply.
"""

import sys

import torch
from torch import nn

from adabatch.checks import fraction, integer, positive


def _dropout(p: float) -> nn.Module:
    # Identity instead of Dropout(0): vmap refuses random ops unless told how to batch them.
    return nn.Dropout(p) if p > 0 else nn.Identity()


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` patches projected to ``dim``-d tokens."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (n, tokens, dim)


class TokenEmbedding(nn.Module):
    """Prepends a learned class token and adds a learned position embedding."""

    def __init__(self, num_patches: int, dim: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embedding

    def per_example_gradients(self, tokens: torch.Tensor, output_grad: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        """The output is cat([cls, tokens]) + pos, so each example's gradient for pos is its whole output
        gradient and for cls its output gradient at position 0 (used by Opacus and the ghost engine)."""
        n = output_grad.shape[0]
        return {
            self.cls_token: output_grad[:, 0].reshape(n, *self.cls_token.shape),
            self.pos_embedding: output_grad.reshape(n, *self.pos_embedding.shape),
        }


class SelfAttention(nn.Module):
    """Multi-head self-attention with no key bias: softmax ignores a shift shared by a query's scores,
    so a key bias has an identically zero gradient. Kept, its coordinates would hold only roundoff,
    which the coordinate-wise test reads as variance with a zero mean (a proposal at the cap)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = (
            layer(x).reshape(n, tokens, self.heads, dim // self.heads).transpose(1, 2)  # (n, heads, tokens, head_dim)
            for layer in (self.query, self.key, self.value)
        )
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(n, tokens, dim)
        return self.dropout(self.proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            _dropout(dropout),
            nn.Linear(hidden, dim),
            _dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    fsdp_blocks = (TransformerBlock,)  # train.parallel=fsdp: each block its own unit

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
    ):
        super().__init__()
        channels, height, width = input_shape
        self.patch_embedding = PatchEmbedding(channels, dim, patch)
        self.token_embedding = TokenEmbedding((height // patch) * (width // patch), dim)
        self.dropout = _dropout(dropout)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.dropout(self.token_embedding(self.patch_embedding(x)))
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])


def vit(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    patch: int = 4,
    dim: int = 192,
    depth: int = 6,
    heads: int = 3,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> ViT:
    for key, value in (("patch", patch), ("dim", dim), ("depth", depth), ("heads", heads)):
        integer(f"model.{key}", value, 1)
    positive("model.mlp_ratio", mlp_ratio)
    fraction("model.dropout", dropout)
    _, height, width = input_shape
    if height % patch or width % patch:
        raise ValueError(f"model.patch={patch} must divide the image size {height}x{width}")
    if dim % heads:
        raise ValueError(f"model.heads={heads} must divide model.dim={dim}")
    # Opacus is slow to import, so only register eagerly when the caller already paid for it.
    if "opacus" in sys.modules:
        register_opacus_samplers()
    return ViT(input_shape, num_classes, patch, dim, depth, heads, mlp_ratio, dropout)


def register_opacus_samplers() -> None:
    """Teach Opacus the per-example gradients of ``TokenEmbedding`` (idempotent).

    Without it Opacus falls back to its slower functorch path for this module.
    """
    from opacus.grad_sample import register_grad_sampler

    register_grad_sampler(TokenEmbedding)(_token_embedding_grad_sample)


def _token_embedding_grad_sample(
    module: TokenEmbedding, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    grads = module.per_example_gradients(activations[0], backprops)
    return {p: g for p, g in grads.items() if p.requires_grad}
