"""The trend-alert evaluation loop of ``clmlf-monitor alerter`` and of ``clmlf-monitor run``.

:class:`AlertLoop` is a daemon thread that calls ``AlertEngine.evaluate(now)`` every ``interval``
seconds; ``run`` also asks for one more evaluation when the member stops (after its final commit,
so the posts it stored last are part of it), the alerter evaluates once at start (and ``--once``
only that).  Several evaluators may run at once: the engine's compare-and-set state in Redis
records, exports and posts each alert episode once.  A failed evaluation (Redis down, a webhook
that raised) is logged and skipped; the next round tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

FINAL_JOIN_TIMEOUT = 15.0  # an evaluation in flight when stopping may take a Redis timeout or two


class AlertLoop(threading.Thread):
    """Evaluate trend alerts every ``interval`` seconds until closed; see the module docstring."""

    def __init__(self, evaluate: Callable[[float], Sequence[Any]], interval: float,
                 transient_errors: tuple[type[BaseException], ...]) -> None:
        super().__init__(name="alert-loop", daemon=True)
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._evaluate = evaluate
        self._interval = interval
        self._transient = transient_errors
        self._stop_event = threading.Event()

    def evaluate_once(self, now: float | None = None) -> bool:
        """One evaluation; False (logged, nothing raised) when it could not be completed."""
        try:
            changed = self._evaluate(time.time() if now is None else now)
        except self._transient as exc:
            log.warning("alert evaluation skipped (retried in %.0fs): %s", self._interval,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False
        except Exception:  # a bug or bad state must not end alerting for the life of the member
            log.exception("alert evaluation failed")
            return False
        for alert in changed:
            log.warning("alert %s: %s", alert.state, alert.summary())
        return True

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self.evaluate_once()

    def close(self, timeout: float = FINAL_JOIN_TIMEOUT) -> None:
        """Stop the periodic evaluations (waits up to ``timeout`` s for one in flight)."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self and timeout > 0:
            self.join(timeout=timeout)

    def final_evaluation(self, timeout: float | None = None) -> bool:
        """Stop the loop, then evaluate once more (the member's last stored posts included).

        With ``timeout``, waiting for an evaluation in flight and the final one together take at
        most that long; an evaluation still running then is abandoned (False)."""
        if timeout is None:
            self.close()
            return self.evaluate_once()
        deadline = time.monotonic() + timeout
        self.close(timeout=timeout)
        if self.is_alive():
            log.warning("final alert evaluation skipped: an evaluation is still running (Redis slow?)")
            return False
        outcome: list[bool] = []
        final = threading.Thread(target=lambda: outcome.append(self.evaluate_once()), name="alert-final",
                                 daemon=True)
        final.start()
        final.join(timeout=max(0.0, deadline - time.monotonic()))
        if not outcome:
            log.warning("final alert evaluation abandoned after %.1fs (Redis slow?)", timeout)
            return False
        return outcome[0]
