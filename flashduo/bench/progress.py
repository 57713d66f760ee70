"""A progress bar on stderr for the benchmark's cells (tqdm when importable)."""

from __future__ import annotations

import sys


class Progress:
    """A progress bar on stderr: tqdm when importable, else a plain counter line."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self._tty = sys.stderr.isatty()
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            interval = 0.5 if self._tty else 30.0
            self._bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, mininterval=interval)

    def describe(self, text: str) -> None:
        """Show what runs now (before it runs, so a hang shows where)."""
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=self._tty)
        elif self._tty:
            print(f"\r[{self.count}/{self.total}] {text:<60}", end="", file=sys.stderr, flush=True)

    def advance(self, text: str = "") -> None:
        """Count one finished cell."""
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)
        elif not self._tty and (self.count % 10 == 0 or self.count == self.total):
            print(f"[{self.count}/{self.total}] {text}", file=sys.stderr, flush=True)

    def write(self, message: str) -> None:
        """Print a line to stderr without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            if self._tty:
                print(file=sys.stderr)
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        """End the bar (a newline after the counter line on a terminal)."""
        if self._bar is not None:
            self._bar.close()
        elif self._tty:
            print(file=sys.stderr)
