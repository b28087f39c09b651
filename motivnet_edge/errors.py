"""Errors raised by motivnet-edge. Every message names the problem and the fix."""

from __future__ import annotations


class MotivnetError(Exception):
    """Base class: the CLI turns any of these into one line on stderr and exit code 2."""


class OptionError(MotivnetError, ValueError):
    """An option has a value the API does not take (the message lists the ones it does)."""


class InvalidImageError(MotivnetError, ValueError):
    """The image could not be read or has an unsupported shape, dtype or size."""


class PackageError(MotivnetError, ValueError):
    """A model package is missing, malformed, tampered with or unsafe."""


class BackendUnavailableError(MotivnetError, ImportError):
    """The requested inference backend is not installed or cannot run here."""


class LabelError(MotivnetError, ValueError):
    """Label sets do not match and no explicit remapping was given.

    Attributes:
        missing: the source labels without a counterpart (the CLI turns them into --map hints).
    """

    def __init__(self, message: str, *, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
