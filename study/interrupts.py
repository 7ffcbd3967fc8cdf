"""SIGTERM and SIGINT: stop the command with 128 + the signal's number, after the running work is marked.

While a command runs (study.cli installs `handled()`), both signals raise `Interrupted`, a
KeyboardInterrupt: Optuna then marks the running trial FAIL at once (no heartbeat grace), the W&B run
is finished with the tag `interrupted`, and the CLI prints how to resume and exits 130 (SIGINT) or 143
(SIGTERM). Lightning turns an interrupt inside `fit` into `sys.exit(1)` (KeyboardInterrupt) or
`sys.exit(0)` (its own SIGTERMException); `from_exception` finds the interrupt behind those.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command was stopped by a signal; `exit_code` is the shell's convention (130, 143)."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def handled():
    """Both signals raise Interrupted for as long as the context lasts (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def from_exception(e: BaseException | None) -> Interrupted | None:
    """The interrupt an exception stands for, or None: ours, a bare KeyboardInterrupt (SIGINT), Lightning's
    SIGTERMException, or the SystemExit Lightning raises after catching a KeyboardInterrupt."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, Interrupted):
            return e
        if type(e).__name__ == "SIGTERMException":
            return Interrupted(signal.SIGTERM)
        if isinstance(e, KeyboardInterrupt):
            return Interrupted(signal.SIGINT)
        if not isinstance(e, SystemExit):
            return None
        e, seen = e.__context__ or e.__cause__, seen + 1
    return None
