"""A small decoder-only transformer (GPT) over token ids, in nanoGPT's names.

Token and learned position embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP, a
final LayerNorm, and a head tied to the token embedding (one Parameter, used twice). Attention is
written with plain matmuls, a softmax and a mask (not F.scaled_dot_product_attention), and every weight
lives in an nn.Linear, nn.Embedding or nn.LayerNorm, so per-example engines (Opacus hooks, torch.func's
vmap, the ghost engine's rules over tokens) see ordinary layers. Positions are embedded per example
(an (n, T) index), so that hooks on the position embedding see a batch dimension.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

INIT_STD = 0.02  # GPT-2's initialization; residual projections get INIT_STD / sqrt(2 * n_layer)


def dropout_layer(p: float) -> nn.Module:
    # Identity instead of Dropout(0): vmap refuses random ops unless told how to batch them.
    return nn.Dropout(p) if p > 0 else nn.Identity()


class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t attends to positions <= t. The key has no bias: a shift
    shared by all of a query's scores leaves the softmax unchanged, so a key bias's gradient is
    identically zero (the coordinate-wise test would read its roundoff as variance)."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_embd, n_embd, bias=bias)
        self.key = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(n_embd, n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = dropout_layer(dropout)
        self.resid_dropout = dropout_layer(dropout)
        future = torch.ones(block_size, block_size, dtype=torch.bool).triu(diagonal=1)
        self.register_buffer("future", future, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = (
            layer(x).view(n, tokens, self.n_head, dim // self.n_head).transpose(1, 2)  # (n, heads, T, head_dim)
            for layer in (self.query, self.key, self.value)
        )
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(dim // self.n_head)
        scores = scores.masked_fill(self.future[:tokens, :tokens], float("-inf"))
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(n, tokens, dim)
        return self.resid_dropout(self.proj(out))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = dropout_layer(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (n, T), T <= block_size, to next-token logits (n, T, vocab_size)."""

    fsdp_blocks = (Block,)  # train.parallel=fsdp: each block its own unit; the root keeps the tied embedding

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float, bias: bool, tie_embeddings: bool) -> None:
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = dropout_layer(dropout)
        self.h = nn.Sequential(*(Block(n_embd, n_head, block_size, dropout, bias) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self._initialize(n_layer)
        if tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def _initialize(self, n_layer: int) -> None:
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual = name.endswith(".proj")  # the projections that add into the residual stream
                nn.init.normal_(module.weight, std=INIT_STD / math.sqrt(2 * n_layer) if residual else INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        n, tokens = idx.shape
        if tokens > self.block_size:
            raise ValueError(f"a sequence of {tokens} tokens is longer than model.block_size={self.block_size}")
        positions = torch.arange(tokens, device=idx.device).expand(n, tokens)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        return self.lm_head(self.ln_f(self.h(x)))


def gpt(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    block_size: int = 64,
    dropout: float = 0.0,
    vocab_size: int | None = None,
    bias: bool = True,
    tie_embeddings: bool = True,
) -> GPT:
    """A GPT for the run's data: `input_shape` is (tokens per example,), `num_classes` the data's vocabulary;
    vocab_size None takes the data's."""
    for key, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{key}={value} must be an integer >= 1")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"model.dropout={dropout} must be a number in [0, 1)")
    if n_embd % n_head:
        raise ValueError(f"model.n_head={n_head} must divide model.n_embd={n_embd}")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1):
        raise ValueError(f"model.vocab_size={vocab_size} must be an integer >= 1, or null (the dataset's)")
    if len(input_shape) != 1:
        raise ValueError(f"model=gpt reads token windows, not inputs of shape {tuple(input_shape)}; use dataset=text")
    if input_shape[0] > block_size:
        raise ValueError(f"model.block_size={block_size} is below dataset.block_size={input_shape[0]}; "
                         "raise model.block_size or lower dataset.block_size")
    if vocab_size is not None and vocab_size < num_classes:
        raise ValueError(f"model.vocab_size={vocab_size} is below the dataset's {num_classes} tokens; "
                         f"set model.vocab_size=null (the dataset's) or at least {num_classes}")
    if not isinstance(bias, bool) or not isinstance(tie_embeddings, bool):
        raise ValueError(f"model.bias={bias} and model.tie_embeddings={tie_embeddings} must be true or false")
    return GPT(vocab_size or num_classes, block_size, n_layer, n_head, n_embd, dropout, bias, tie_embeddings)
