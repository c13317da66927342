"""The exceptions proxyscale raises on purpose.

Every error a user can cause is a :class:`ProxyscaleError` whose message says what was wrong
and what to do; the CLI prints it on one line and exits non-zero.
"""
from __future__ import annotations


class ProxyscaleError(Exception):
    """Base class: an error with a message meant for the user."""


class ConfigError(ProxyscaleError):
    """A study spec or setting is malformed, unknown or impossible."""


class DataError(ProxyscaleError):
    """Input data is missing, empty, or not decodable."""


class DivergedError(ProxyscaleError):
    """Training produced a non-finite loss; the step is recorded as failed."""


class StoreError(ProxyscaleError):
    """The run store is inconsistent or a step failed."""


class OutputError(ProxyscaleError):
    """An output path the user named may not, or cannot, be written (see proxyscale.store.output)."""
