"""Counting the bytecode instructions (opcodes) each Python function executes,
in every greenlet, and listing where two counts differ: what
``request_cost.py --opcodes`` (the WSGI app in-process) and ``opcodes.py`` (a
gunicorn worker, through opcode_counting_conf.py) share.

Imports only the standard library and greenlet, so that a gunicorn config can
load it by path into a worker of any checkout.
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Iterable
from types import CodeType, FrameType
from typing import Any


class OpcodeCounter:
    """Opcodes executed per code object between :meth:`start` and :meth:`stop`
    (``sys.settrace``'s ``opcode`` events). ``greenlet.settrace`` installs the
    tracer again at each switch, so every greenlet is counted. What is counted:
    every frame that begins while counting, and frames begun before it from their
    next call on. Compiled code counts nothing of its own (the event loop,
    greenlet switches, gevent's Cython-compiled parts)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[CodeType] = collections.Counter()

    def start(self) -> None:
        import greenlet  # type: ignore[import-untyped]

        greenlet.settrace(lambda event, args: sys.settrace(self._trace_calls))
        sys.settrace(self._trace_calls)

    def stop(self) -> None:
        import greenlet

        greenlet.settrace(None)  # first: a switch would set the tracer again
        sys.settrace(None)

    def by_function(self, roots: Iterable[str] = ()) -> dict[str, int]:
        """The counts by ``file:qualname``, the file relative to site-packages, the
        standard library or one of ``roots`` (directories): named so, a function
        keeps its name when lines move, and two checkouts compare function by function."""
        markers = ("site-packages/", f"python{sys.version_info.major}.{sys.version_info.minor}/",
                   *(os.path.join(root, "") for root in roots))
        named: dict[str, int] = {}
        for code, count in self.counts.items():
            path = code.co_filename
            for marker in markers:
                path = path.split(marker)[-1]
            name = f"{path}:{getattr(code, 'co_qualname', code.co_name)}"
            named[name] = named.get(name, 0) + count
        return named

    def _trace_calls(self, frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code, counts = frame.f_code, self.counts

        def trace_opcodes(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[code] += 1
            return trace_opcodes

        return trace_opcodes


def print_differences(mine: dict[str, float], theirs: dict[str, float], top: int, mine_label: str,
                      their_label: str) -> None:
    """The ``top`` functions whose counts differ most between ``mine`` and
    ``theirs`` (per stream, per request, ...), with both counts and the change."""
    change = {function: mine.get(function, 0.0) - theirs.get(function, 0.0)
              for function in mine.keys() | theirs.keys()}
    print(f"   {mine_label[:9]:>9}{their_label[:9]:>10}{'change':>9}  function")
    for function in sorted(change, key=lambda name: -abs(change[name]))[:top]:
        print(f"   {mine.get(function, 0.0):>9.1f}{theirs.get(function, 0.0):>10.1f}{change[function]:>+9.1f}  "
              f"{function}")
