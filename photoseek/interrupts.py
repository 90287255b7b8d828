"""Stopping a long job cleanly on Ctrl-C or SIGTERM.

A Ctrl-C in a terminal sends SIGINT to every process of the foreground job: the
indexer, its decode workers and their fork server. Python turns it into a
KeyboardInterrupt raised wherever the main thread happens to be: inside a lock's
``with`` block of the process pool, inside a SQLite commit, inside the pool's exit
hook. That is how ``photoseek index`` once hung on a lock until a second Ctrl-C
(issue 9). So the indexer never gets an asynchronous exception: :class:`StopSignals`
turns the first SIGINT or SIGTERM into a flag (``event``) that the indexer checks
between files, decode results and batches; it then stops submitting work, commits
what is done and returns. The helper processes ignore SIGINT (the parent decides:
see :mod:`photoseek.indexer.decode_pool`).

A second signal means "now": the hooks registered with :func:`at_hard_exit` kill the
helper processes, one line is written to stderr, and the process ends at once with
``os._exit`` (no exit hooks, no thread joins, nothing that can wait on a lock). The
index stays consistent anyway: every checkpoint is one SQLite transaction, and the
vector file is a cache, rebuilt from the database when it is stale.

This module imports only the standard library, so the command line can install the
handlers before it imports the indexer (torch: seconds).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_hard_exit_hooks: list[Callable[[], None]] = []

# The multiprocessing resource tracker unlinks the semaphores of a process pool that a
# hard exit leaves behind, and warns about each such "leak" as it does so. That cleanup
# is the point; the warning, printed to the user's terminal after the process has
# gone, is noise. The tracker is a separate Python started with this process's -W
# options, so this filter, added before it starts, applies to it alone.
_TRACKER_QUIET = "ignore:resource_tracker:UserWarning"


def at_hard_exit(hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook`` (fast, no locks: it runs inside a signal handler) before a hard exit."""
    _hard_exit_hooks.append(hook)
    return hook


def hard_exit(code: int, message: str = "") -> None:
    """End the process now: helper processes killed, ``message`` on stderr, exit ``code``."""
    for hook in list(_hard_exit_hooks):
        try:
            hook()
        except BaseException:  # noqa: BLE001 - nothing may stop the exit
            pass
    if message:
        try:
            os.write(2, f"\n{message}\n".encode(errors="replace"))  # not print(): stderr may be mid-write
        except OSError:
            pass
    os._exit(code)


class StopSignals:
    """Turns SIGINT and SIGTERM into a stop request; a second one ends the process.

    ``with StopSignals() as stop: Indexer(dir, stop=stop.event).run(...)``, then
    ``stop.requested`` / ``stop.exit_code`` (130 for SIGINT, 143 for SIGTERM).

    Handlers are installed only in the main thread (elsewhere Python does not allow it:
    the event can still be set by hand), never over a signal the process was told to
    ignore (``nohup``, background jobs of a script), and the previous ones are put back
    by :meth:`restore` (or on leaving the ``with`` block).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, *, hard_exit_message: str = ""):
        self.event = threading.Event()
        self.signum: int | None = None
        self.hard_exit_message = hard_exit_message
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @property
    def exit_code(self) -> int:
        """The shell's code for "ended by this signal": 128 + its number."""
        return 128 + int(self.signum or signal.SIGINT)

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return self
        for sig in self.SIGNALS:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue
            self._previous[sig] = signal.signal(sig, self._handle)
        if self._previous and _TRACKER_QUIET not in sys.warnoptions:
            sys.warnoptions.append(_TRACKER_QUIET)
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            hard_exit(128 + signum, self.hard_exit_message)
        self.signum = signum
        self.event.set()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def quit_on_signals() -> None:
    """For commands with nothing to save (search, status, facets, serve before it listens): the
    first Ctrl-C or SIGTERM ends the process at once, quietly, with the shell's code. Without it a
    KeyboardInterrupt raised inside an import is a traceback, or worse, reworded by the library
    being imported (transformers reports it as a missing package). The index command replaces
    these handlers with :class:`StopSignals`; uvicorn installs its own once it serves."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in StopSignals.SIGNALS:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, _quit)


def _quit(signum: int, frame: FrameType | None) -> None:
    hard_exit(128 + signum)

