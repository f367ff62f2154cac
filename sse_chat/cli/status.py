"""stderr of the command line: status lines (errors, reconnections, how to resume)
that always start on a line of their own, and reasoning text streamed dimmed.

On a terminal stdout and stderr share the screen: before a status line the answer
output makes room (:meth:`Output.break_line`: a newline after a half-written line of
answer; the Markdown display stops redrawing, so that it never draws over the line).
"""

from __future__ import annotations

from typing import Protocol, TextIO


class LineBreaker(Protocol):
    def break_line(self) -> None: ...


class Status:
    """Writes to ``stderr`` for the answer ``output`` (anything with ``break_line()``).

    Args:
        stderr: where status goes (a text stream).
        output: the answer's output, asked to end its line before each status line.
    """

    def __init__(self, stderr: TextIO, output: LineBreaker | None = None) -> None:
        self._stderr = stderr
        self._output = output
        self._mid_line = False  # the last text written to stderr did not end a line

    def line(self, text: str) -> None:
        """Write ``text`` (one or more lines, no final newline needed) starting on a
        line of its own, ending with a newline; flushed."""
        if self._output is not None:
            self._output.break_line()
        if self._mid_line:
            self._stderr.write("\n")
        self._stderr.write(text.rstrip("\n") + "\n")
        self._stderr.flush()
        self._mid_line = False

    def text(self, text: str) -> None:
        """Write ``text`` as it comes (streamed reasoning); flushed."""
        if not text:
            return
        self._stderr.write(text)
        self._stderr.flush()
        self._mid_line = not text.endswith("\n")
