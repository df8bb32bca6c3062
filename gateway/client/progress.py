"""A progress bar on a terminal: one line on stderr, redrawn in place, and nothing when stderr is a file or a pipe."""

from __future__ import annotations

from typing import Final, TextIO

WIDTH: Final = 30


class ProgressBar:
    """``[#####.....]  500/1,000 rows`` on ``stream`` while it is a terminal; silent otherwise, so logs stay clean."""

    def __init__(self, total: int, stream: TextIO, *, unit: str = "rows") -> None:
        self._total = max(total, 1)
        self._stream = stream
        self._unit = unit
        self._shown = stream.isatty()
        self._drawn = False

    def update(self, done: int) -> None:
        if not self._shown:
            return
        filled = WIDTH * min(done, self._total) // self._total
        self._stream.write(f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {done:,}/{self._total:,} {self._unit}")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line, so what is printed next starts on its own."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
