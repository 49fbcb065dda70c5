"""Signals to ``personagpt run``: SIGINT (Ctrl-C), SIGTERM (``timeout``, systemd, ``kubectl delete``) and SIGHUP (a
closed terminal) become one :class:`Interrupted` exception in the runner's main thread, raised where it waits for
its stage. The stage in flight is then stopped as a whole (its process group, a served model), recorded as
``interrupted`` and the runner exits with 128 + the signal: 130, 143, 129. Further signals while it stops are
ignored, so that a second Ctrl-C cannot cut the cleanup short."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, it is not an error of the program
    """The runner got ``signum``; it exits with ``exit_code`` once the stage is stopped."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, the first stop signal raises :class:`Interrupted`; later ones are ignored."""
    fired: list[int] = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
