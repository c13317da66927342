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


class ProcessDied(StoreError):
    """A process a step started and waited for (a data-parallel rank, torchrun) was killed by a
    signal: booked as if the step's own process had died (``crashed``), so the executor retries
    it up to ``executor.retries`` times, resuming from its last checkpoint."""


class OutputError(ProxyscaleError):
    """An output path the user named may not, or cannot, be written (see proxyscale.store.output)."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM stopped a run (raised by the CLI's signal handler).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the way
    swallows it; unlike it, the CLI framework passes it through untouched. The executor fills
    in ``finished``/``total`` (steps of the plan done in the store) after it has stopped the
    workers, for the one line the CLI prints; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, finished: int | None = None, total: int | None = None) -> None:
        super().__init__(signum)
        self.signum, self.finished, self.total = signum, finished, total

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        """What the user reads: how far the run got, and how to go on."""
        if self.total is None:
            return "interrupted before any step ran; finished steps are kept; re-run the same command to resume"
        return f"interrupted: {self.finished} of {self.total} steps finished; re-run the same command to resume"
