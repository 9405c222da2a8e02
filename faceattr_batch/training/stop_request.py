"""A stop asked for while training (Ctrl-C, or SIGTERM from ``kill``, a scheduler or a machine shutting down), acted on
between two iterations: the loop finishes the iteration in hand, writes its checkpoint, and the process then ends as
that signal would have ended it. Iterations are seeded by their number, so ``--resume`` from that checkpoint goes on
exactly as an uninterrupted run would; a stop that cut an update in half could not be resumed so.

A second signal while the first is honoured stops at once (Python's KeyboardInterrupt), as an impatient user means.
Signals reach Python's main thread only: elsewhere (a thread of the user's) nothing is installed and a stop acts
where it lands, as before; a signal the process ignores (SIGINT in a shell's background job) stays ignored.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """``with StopRequest() as stop:`` around a training loop; ``stop.asked`` after each iteration says whether to
    checkpoint and leave; after the ``with`` block, ``stop.honour()`` ends the process as the signal asked (Ctrl-C:
    KeyboardInterrupt; SIGTERM: its default, termination)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def asked(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:  # a background job's ignored Ctrl-C stays ignored
                    self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _note(self, number: int, frame) -> None:
        if self.asked:  # asked twice: now
            raise KeyboardInterrupt
        self.signal = number
        name = signal.Signals(number).name
        again = "Ctrl-C" if number == signal.SIGINT else name
        log.warning(
            "%s: stopping after this iteration, once its checkpoint is written (%s again: at once)", name, again
        )

    def honour(self) -> None:
        """End the process as the noted signal would have (call outside the ``with`` block); nothing if none came."""
        if self.signal is not None:
            signal.raise_signal(self.signal)
