"""The one append-only JSON-lines log of the library, with one torn-line policy.

Every JSON-lines file the library appends to (the generation and activation-index caches of
:mod:`persona_vectors.personas`, the LLM judge's verdict cache, a sweep's results file) goes through
:class:`JsonlLog`. The policy, in full:

- **A record is a complete line**: bytes up to and including a ``"\\n"`` that ``parse`` accepts (by default a
  JSON object). Blank lines are ignored.
- **An unterminated last line is a torn write** (a crash in the middle of an append): it is never read as a
  record, whatever it holds. The next append starts with a ``"\\n"`` that fences the torn bytes off as a line of
  their own, so they never glue onto a new record; nothing is truncated behind another writer's back. A
  single writer that owns the file (a sweep under its lock) may cut them off instead with :meth:`JsonlLog.truncate`.
- **A complete line that does not parse is bad**: readers of caches skip it (:meth:`JsonlLog.records`);
  strict readers (a sweep's results) look at :attr:`Scan.bad` and decide.
- **Appends are one ``os.write`` on an ``O_APPEND`` descriptor**, so lines from concurrent threads or
  processes never interleave on a local file system; ``fsync=True`` makes each append durable before it returns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

Parse = Callable[[bytes], Any]


def parse_object(line: bytes) -> dict[str, Any]:
    """One line as a JSON object; ``ValueError`` for anything else (bad UTF-8, bad JSON, nesting, non-objects)."""
    try:
        obj = json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


@dataclass
class Scan:
    """What a log holds: its records, its bad lines and its torn tail (line numbers are 1-based)."""

    entries: list[tuple[int, Any]] = field(default_factory=list)
    """``(line number, parsed record)`` of every complete line that parsed, in file order."""
    bad: list[tuple[int, int, int]] = field(default_factory=list)
    """``(line number, start, end)`` byte spans of complete, non-blank lines that did not parse."""
    torn: tuple[int, int] | None = None
    """``(line number, start)`` of an unterminated last line, or None."""
    size: int = 0
    """Bytes in the file when it was read."""
    first_line: bytes = b""
    """The file's first line without its newline (to recognise whose file it is)."""

    @property
    def problems(self) -> list[tuple[int, int, int]]:
        """Bad lines and the torn tail as ``(line number, start, end)`` spans, in file order."""
        out = list(self.bad)
        if self.torn is not None:
            out.append((self.torn[0], self.torn[1], self.size))
        return out


class JsonlLog:
    """An append-only JSON-lines file under the module's torn-line policy.

    ``parse`` turns one complete line (bytes, with its newline) into a record or raises ``ValueError``.
    """

    def __init__(self, path: str | os.PathLike[str], parse: Parse = parse_object) -> None:
        self.path = Path(path)
        self.parse = parse

    def scan(self) -> Scan:
        """Read the whole file (a missing file is an empty log; other ``OSError`` propagate)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Scan()
        scan = Scan(size=len(data), first_line=data.split(b"\n", 1)[0])
        pos, line_no = 0, 0
        while pos < len(data):
            line_no += 1
            nl = data.find(b"\n", pos)
            if nl < 0:
                scan.torn = (line_no, pos)
                break
            end = nl + 1
            raw = data[pos:end]
            if raw.strip():
                try:
                    scan.entries.append((line_no, self.parse(raw)))
                except ValueError:
                    scan.bad.append((line_no, pos, end))
            pos = end
        return scan

    def records(self) -> list[Any]:
        """The records, in file order; a missing or unreadable file is an empty log (a cache miss)."""
        try:
            return [obj for _, obj in self.scan().entries]
        except OSError:
            return []

    def append_lines(self, lines: Iterable[str], *, fsync: bool = False) -> None:
        """Append already-encoded lines (without their newlines) in one write; creates the file and its folder."""
        text = "".join(line + "\n" for line in lines)
        if not text:
            return
        payload = text.encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload  # fence off a torn last line
            os.write(fd, payload)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, records: Iterable[Mapping[str, Any]], *, fsync: bool = False, **dumps: Any) -> None:
        """Append records as JSON lines in one write (``dumps``: keyword arguments of ``json.dumps``)."""
        dumps.setdefault("ensure_ascii", False)
        self.append_lines((json.dumps(r, **dumps) for r in records), fsync=fsync)

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes, durably (only for a writer that owns the file: see the module doc)."""
        with open(self.path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
