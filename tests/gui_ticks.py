"""How responsive the launcher stays: a 10 ms QTimer in the GUI thread and the gaps between its ticks.

    with TimerTicks() as ticks:
        with ticks.run("first"):
            ...start a job and wait for it (in the Qt event loop)...
    print(ticks.report())
    assert ticks.max_gap("first") < 0.1

A job that holds Python's GIL, or page code that blocks the GUI thread, shows as a long gap.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np


class TimerTicks:
    def __init__(self, interval_ms: int = 10):
        from PySide6.QtCore import QTimer

        self.times: list[float] = []
        self.runs: dict[str, tuple[int, int]] = {}
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def __enter__(self) -> TimerTicks:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()

    @contextmanager
    def run(self, name: str):
        """The ticks from here to the end of the block (a start time counts as the first tick)."""
        self.times.append(time.perf_counter())
        first = len(self.times) - 1
        yield
        self.runs[name] = (first, len(self.times))

    def ticks(self, name: str) -> np.ndarray:
        first, end = self.runs[name]
        return np.array(self.times[first:end])

    def count(self, name: str) -> int:
        return len(self.ticks(name))

    def max_gap(self, name: str) -> float:
        """The longest wait between two ticks of the run, in seconds."""
        t = self.ticks(name)
        return float(np.diff(t).max()) if len(t) > 1 else float("inf")

    def report(self) -> str:
        lines = []
        for name in self.runs:
            t = self.ticks(name)
            gaps = np.diff(t) * 1000
            lines.append(
                f"{name}: {len(t)} ticks in {t[-1] - t[0]:.2f} s, max gap {gaps.max():.1f} ms at "
                f"{t[gaps.argmax()] - t[0]:.2f} s, 99th percentile {np.percentile(gaps, 99):.1f} ms"
            )
        return "\n" + "\n".join(lines)
