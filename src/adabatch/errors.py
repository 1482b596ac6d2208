"""The errors a user's input can cause, each reported as one line (src/train.py: exit 2, nothing written)."""


class ConfigError(ValueError):
    """A config that cannot run; the message is one line."""
