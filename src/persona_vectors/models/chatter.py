"""Quieting the libraries' chatter during loads and generation: a logging filter on the chatty libraries'
records (below ERROR) instead of changing any logger's level.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator


_CHATTY = ("transformers", "transformer_lens")


class _LibraryChatter(logging.Filter):
    """Drops records below ERROR that were logged from inside the chatty libraries' files (TransformerLens
    logs some messages through the root logger with ``logging.warning``); every other record passes."""

    def __init__(self) -> None:
        super().__init__()
        dirs = []
        for name in _CHATTY:
            with contextlib.suppress(Exception):
                spec = importlib.util.find_spec(name)
                if spec is not None and spec.submodule_search_locations:
                    dirs += [str(Path(d)) + os.sep for d in spec.submodule_search_locations]
        self.dirs = tuple(dirs)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not (self.dirs and record.pathname.startswith(self.dirs))


_CHATTER_FILTER: _LibraryChatter | None = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers/TL chatter (warnings and info logs) inside library calls.

    Only the libraries' own loggers are quietened (their levels restored afterwards); the root logger's level
    is never touched: a filter on it drops only records logged from those libraries' files.
    """
    global _CHATTER_FILTER
    if _CHATTER_FILTER is None:
        _CHATTER_FILTER = _LibraryChatter()
    loggers = [logging.getLogger(n) for n in _CHATTY]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    added = _CHATTER_FILTER not in root.filters  # nested calls: the outermost one removes it
    if added:
        root.addFilter(_CHATTER_FILTER)
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("always", category=UserWarning, module=r"persona_vectors\.")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        if added:
            root.removeFilter(_CHATTER_FILTER)
