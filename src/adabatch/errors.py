"""The errors a user's input can cause, each reported as one line (src/train.py: exit 2, nothing written)."""


class ConfigError(ValueError):
    """A config that cannot run; the message is one line."""


class DatasetUnavailable(RuntimeError):
    """A dataset is neither on disk nor downloadable; the message is one line."""


def one_line(message: object) -> str:
    """`message` (an exception or text) with every run of whitespace, newlines included, made one space."""
    return " ".join(str(message).split()) or type(message).__name__
