"""One job at a time per process: later jobs wait in a first-come queue, the running one reports progress from a
worker thread and can be cancelled. Plain Python, so the web page and the tests drive it the same way."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a job, at its next progress report, once its cancellation was asked."""


@dataclass
class Progress:
    """fraction in [0, 1]; image: an optional (H, W, 3) uint8 preview (e.g. a view just sampled)."""

    fraction: float
    message: str
    image: np.ndarray | None = None


@dataclass
class Done:
    """value: what the job returned."""

    value: Any


@dataclass
class Failed:
    """message: one line for the page (bad input, cancellation or an unexpected error)."""

    message: str


Event = Progress | Done | Failed
Report = Callable[[Progress], None]


class JobQueue:
    """Runs `work(report)` jobs one at a time, in arrival order. A job's `report(Progress)` raises Cancelled
    once `cancel()` was called, which is how a long job stops between two steps."""

    def __init__(self, min_interval: float = 0.2) -> None:
        self.min_interval = min_interval
        self._turns: deque[object] = deque()
        self._changed = threading.Condition()
        self._cancel: threading.Event | None = None

    def cancel(self) -> bool:
        """Ask the running job to stop; False if none is running."""
        with self._changed:
            if self._cancel is None:
                return False
            self._cancel.set()
            return True

    def waiting(self) -> int:
        """Jobs queued or running."""
        with self._changed:
            return len(self._turns)

    def run(self, work: Callable[[Report], Any], poll: float = 0.5) -> Iterator[Event]:
        """Queue `work`, then yield its progress (at most one event per min_interval, except those with an image)
        and finally Done(result) or Failed(message). Closing the iterator early cancels the job or its turn; the
        worker thread frees the turn when the job ends, so the queue moves on even if nobody reads the events."""
        turn = object()
        with self._changed:
            self._turns.append(turn)
        cancel = threading.Event()
        started = False
        try:
            while (ahead := self._jobs_ahead(turn, cancel, poll)) > 0:
                yield Progress(0.0, f"queued: {ahead} job(s) ahead")
            events: queue.Queue[Event] = queue.Queue()
            threading.Thread(target=self._work, args=(work, events, cancel, turn), daemon=True).start()
            started = True
            yield from self._relay(events)
        finally:
            cancel.set()
            if not started:
                self._release(turn)

    def _release(self, turn: object) -> None:
        with self._changed:
            if self._turns[0] is turn:
                self._cancel = None
            self._turns.remove(turn)
            self._changed.notify_all()

    def _jobs_ahead(self, turn: object, cancel: threading.Event, poll: float) -> int:
        """Wait up to `poll` seconds for this turn; 0 once it has come (and the job is then the running one)."""
        with self._changed:
            if self._turns[0] is not turn:
                self._changed.wait(poll)
            ahead = self._turns.index(turn)
            if ahead == 0:
                self._cancel = cancel
            return ahead

    def _relay(self, events: queue.Queue[Event]) -> Iterator[Event]:
        last = 0.0
        while True:
            event = events.get()
            if not isinstance(event, Progress):
                yield event
                return
            now = time.monotonic()
            if event.image is not None or now - last >= self.min_interval:
                last = now
                yield event

    def _work(
        self, work: Callable[[Report], Any], events: queue.Queue[Event], cancel: threading.Event, turn: object
    ) -> None:
        def report(progress: Progress) -> None:
            if cancel.is_set():
                raise Cancelled
            events.put(progress)

        outcome: Event = Failed("stopped")
        try:
            outcome = Done(work(report))
        except Cancelled:
            outcome = Failed("cancelled")
        except (ValueError, FileNotFoundError) as error:
            outcome = Failed(str(error))
        except Exception as error:  # the page gets one line; the console keeps the traceback
            log.exception("job failed")
            outcome = Failed(f"failed: {type(error).__name__}: {error}")
        finally:
            self._release(turn)
            events.put(outcome)
