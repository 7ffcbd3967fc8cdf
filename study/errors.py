"""The project's own error: bad input, reported with exit code 2 before any compute (study/cli.py)."""


class ConfigError(ValueError):
    """Bad configuration; the message names the key, the value and the valid options."""
