"""Run one long advface call at a time off the GUI thread, and turn its progress into Qt signals.

Long calls take ``progress: Callable[[Progress], None]`` (``advface.progress``). The worker hands them a
callback that forwards every :class:`~advface.progress.Progress` as a signal and raises
:class:`~advface.progress.Cancelled` once :meth:`Worker.stop` was called, so a call stops at its next step.
Signals cross from the pool's thread to the GUI thread through queued connections: slots always run in
the GUI thread.

A job holds Python's GIL only between TensorFlow's kernels, except for one thing: a full garbage
collection over everything TensorFlow, Keras and the models have allocated (a quarter of a second on a
laptop CPU, while a first attack traces its step). :meth:`Worker.start` therefore moves the objects alive
at that moment into the collector's permanent generation (:func:`gc.freeze`), so collections during a
job only walk what the job allocates and the GUI keeps ticking. When the job ends they are unfrozen, so
whatever became garbage meanwhile (a page's previous result, a replaced model) is collected as usual.
"""

from __future__ import annotations

import gc
import threading
import traceback
from typing import Any, Protocol

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from advface.errors import AdvfaceError
from advface.progress import Cancelled, Progress, ProgressCallback


class Job(Protocol):
    """A long call: takes ``progress`` (and keyword arguments) and returns a result."""

    def __call__(self, *, progress: ProgressCallback, **kwargs: Any) -> Any: ...


def describe(exc: BaseException) -> str:
    """The one line a user sees: an :class:`AdvfaceError`'s message as it is, anything else with its type
    (it is a bug, and the details hold the traceback)."""
    text = str(exc).strip()
    if isinstance(exc, AdvfaceError) and text:
        return text.splitlines()[0]
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _Relay(QObject):
    """Lives in the GUI thread; the task emits on it from the pool's thread (queued into the GUI)."""

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()


class _Task(QRunnable):
    def __init__(self, fn: Job, kwargs: dict, relay: _Relay, stop: threading.Event):
        super().__init__()
        self.fn, self.kwargs, self.relay, self.stop = fn, kwargs, relay, stop

    def callback(self, p: Progress) -> None:
        if self.stop.is_set():
            raise Cancelled("stopped by the user")
        self.relay.progress.emit(p)

    def run(self) -> None:
        try:
            result = self.fn(progress=self.callback, **self.kwargs)
        except Cancelled:
            self.relay.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - everything goes to the user, nothing is lost
            self.relay.failed.emit(describe(exc), traceback.format_exc())
        else:
            self.relay.finished.emit(result)


class Worker(QObject):
    """One job at a time on a private one-thread pool.

    Signals (always delivered in the GUI thread):
        progress(Progress): once per step of the running job, in order.
        finished(object): the job's result.
        failed(str, str): a one-line message for the user and the details (traceback).
        cancelled(): the job stopped after :meth:`stop`.
        busy(bool): ``True`` when a job starts, ``False`` when it has ended (before the signal above).

    Example:
        >>> worker = Worker()
        >>> worker.finished.connect(print)
        >>> worker.start(attack, model=model, images=chips, goal=goal)  # attack(progress=..., ...)
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    busy = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._stop = threading.Event()
        self._busy = False
        self.owner = ""  # who started the running (or last) job
        self._task: _Task | None = None
        self._relay = _Relay(self)
        queued = Qt.ConnectionType.QueuedConnection
        self._relay.progress.connect(self._on_progress, queued)
        self._relay.finished.connect(self._on_finished, queued)
        self._relay.failed.connect(self._on_failed, queued)
        self._relay.cancelled.connect(self._on_cancelled, queued)

    @property
    def is_busy(self) -> bool:
        return self._busy

    def start(self, fn: Job, /, *, owner: str = "", **kwargs: Any) -> bool:
        """Run ``fn(progress=callback, **kwargs)`` off the GUI thread; ``False`` (and nothing runs) while
        another job is still running. ``owner`` names who started it (a page's title), for messages."""
        if self._busy:
            return False
        self._busy = True
        self.owner = owner
        self._stop.clear()
        self._task = _Task(fn, kwargs, self._relay, self._stop)
        self._task.setAutoDelete(False)  # Python owns it (self._task); Qt must not delete it under us
        gc.freeze()  # see the module docstring: no full collection over the models while the job runs
        self.busy.emit(True)
        self._pool.start(self._task)
        return True

    def stop(self) -> None:
        """Ask the running job to stop: its next progress callback raises ``Cancelled``."""
        if self._busy:
            self._stop.set()

    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop the running job and wait for the pool (on closing the window); ``True`` when it is idle."""
        self.stop()
        return self._pool.waitForDone(msecs)

    # --- in the GUI thread ---------------------------------------------------------------------------

    def _end(self) -> None:
        self._busy = False
        self._task = None
        gc.unfreeze()  # what the job's start froze may be garbage now (a page's previous result): collectable
        self.busy.emit(False)

    @Slot(object)
    def _on_progress(self, p: Progress) -> None:
        self.progress.emit(p)

    @Slot(object)
    def _on_finished(self, result: object) -> None:
        self._end()
        self.finished.emit(result)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self._end()
        self.failed.emit(message, details)

    @Slot()
    def _on_cancelled(self) -> None:
        self._end()
        self.cancelled.emit()
