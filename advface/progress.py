"""One progress path for the CLI and the GUI.

Long calls take ``progress: ProgressCallback | None`` and call it once per outer step, outside any
compiled function. The CLI renders it as a tqdm bar; the GUI's worker turns it into Qt signals and
raises :class:`Cancelled` from inside the callback when the user presses Stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """One step of a long call.

    Attributes:
        step: steps done so far (1-based once work has happened).
        total: steps expected, or ``None`` when unknown.
        stage: what is being done, e.g. ``"embed"`` or ``"pgd"``.
        metrics: scalar values worth showing (loss, distance, success rate ...).
    """

    step: int
    total: int | None
    stage: str = ""
    metrics: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(self.step / self.total, 1.0)


ProgressCallback = Callable[[Progress], None]


class Cancelled(Exception):  # noqa: N818 - it names the event, like KeyboardInterrupt
    """Raised by a progress callback to stop a long call; the call lets it propagate."""


def report(
    progress: ProgressCallback | None, step: int, total: int | None, stage: str = "", **metrics
) -> None:
    """Call ``progress`` if there is one (the helper long calls use)."""
    if progress is not None:
        progress(Progress(step=step, total=total, stage=stage, metrics=metrics))
