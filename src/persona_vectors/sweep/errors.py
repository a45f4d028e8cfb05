"""The sweep's exceptions and warning, in one place so the config, the store and the runner can raise them
without importing each other.
"""

from __future__ import annotations


class SweepConfigError(ValueError):
    """A sweep config is malformed; the message names the key."""


class SweepConfigMismatchError(ValueError):
    """An existing results file was written by a different config or model."""


class SweepStoreError(ValueError):
    """A results path cannot be used as a store (it is the config, a directory, or a file this library did not
    write); the message names the path and the fix. Nothing was written or deleted."""


class StoreCorruptError(SweepStoreError):
    """A results file has a corrupt line that is not the last one (not a crash artefact), or a row that lacks a
    coordinate or holds one of the wrong type; the message names ``file:line``."""


class SweepStoreLockedError(SweepStoreError):
    """Another process holds the lock of this results store (another sweep is running)."""


class SweepRowsNotStoredWarning(UserWarning):
    """Some rows of a sweep were not stored because their steered generation went non-finite (one per cell)."""


# ------------------------------------------------------------------------------------------------ config
