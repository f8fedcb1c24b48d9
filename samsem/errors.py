"""Exceptions that carry a message meant for the user (file, reason, what was expected)."""

from __future__ import annotations

from pathlib import Path


class SamsemError(Exception):
    """Base class for errors reported to the user without a traceback."""


class InputError(SamsemError):
    """A file or value given by the user cannot be used.

    The message names the file (when there is one), the reason and, optionally, what was expected.
    """

    def __init__(self, path: str | Path | None, reason: str, expected: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        self.expected = expected
        where = f"{self.path}: " if self.path is not None else ""
        tail = f" (expected {expected})" if expected else ""
        super().__init__(f"{where}{reason}{tail}")

    def __reduce__(self) -> tuple[type[InputError], tuple[Path | None, str, str | None]]:
        """Pickle by the constructor's arguments (an error crossing processes, e.g. from a Ray worker)."""
        return type(self), (self.path, self.reason, self.expected)


class ConfigError(SamsemError):
    """An option or configuration value is invalid."""


class EngineError(SamsemError):
    """A model engine failed or answered outside its io-spec while running (not the user's input)."""
