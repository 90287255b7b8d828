"""Imported by the indexer's decode fork server when it starts, and by nothing else.

The fork server (multiprocessing's "forkserver") ignores SIGINT, but gives each process
it forks the SIGINT handler it had before, i.e. Python's KeyboardInterrupt. A Ctrl-C in
a terminal reaches every process of the foreground job, so a decode worker caught
between its fork and its initialiser (or any later moment, without one) died with a
``Process ForkServerProcess-1: Traceback ... KeyboardInterrupt`` on the user's
terminal. The fork server imports its preload modules before it saves "the handler
it had before", so ignoring SIGINT here makes every worker ignore it from its first
instruction. The indexer decides when its workers stop (see
:mod:`photoseek.indexer.decode_pool`); SIGTERM and SIGKILL still end them.

It also preloads what the workers need (Pillow and NumPy, via photoseek.imaging) so
each forked worker starts with them imported; never torch.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)

import photoseek.imaging  # noqa: E402,F401  (the workers' code; after the handler, so a Ctrl-C meanwhile is ignored too)
