"""Where one ``photoseek index`` run's time goes: the indexer run in this process, on an empty
index, with a timestamp (seconds since this script started) at the start and end of each step
and at batches going to the model, and the machine's busy cores per second.

    python bench/index_timeline.py FOLDER MODEL_ID

The steps are the indexer's own methods, wrapped here (nothing in photoseek changes); Python's
start-up and the command line's own imports are not in it (bench/index_bound.py measures the
whole command).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

STARTED = time.perf_counter()


def _busy_cores(samples: list[tuple[float, float]], cores: int) -> None:
    def read() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v[:8]) - v[3] - v[4], sum(v[:8])

    prev = read()
    while True:
        time.sleep(1.0)
        cur = read()
        samples.append((time.perf_counter() - STARTED, (cur[0] - prev[0]) / max(1, cur[1] - prev[1]) * cores))
        prev = cur


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    folder, model_id = Path(argv[0]), argv[1]
    marks: list[tuple[float, str]] = []

    def mark(what: str) -> None:
        marks.append((time.perf_counter() - STARTED, what))

    import os

    busy: list[tuple[float, float]] = []
    threading.Thread(target=_busy_cores, args=(busy, os.cpu_count() or 1), daemon=True).start()
    import photoseek.indexer.pipeline as pipeline
    from photoseek.settings import Settings
    from photoseek.storage.sqlite import SqliteCatalogue
    from photoseek.store import VectorStore

    mark("indexer imported")

    def wrap(cls, name: str) -> None:
        original = getattr(cls, name)

        owner = getattr(cls, "__name__", "?").rpartition(".")[2]

        def timed(*args, **kwargs):
            mark(f"{owner}.{name} starts")
            try:
                return original(*args, **kwargs)
            finally:
                mark(f"{owner}.{name} ends")

        setattr(cls, name, timed)

    for name in ("_settle_model", "_plan", "_apply_cheap_changes", "_decode_ahead", "_get_encoder", "_embed", "_tag"):
        wrap(pipeline.Indexer, name)
    wrap(pipeline, "prepare_indexing_encoder")  # the functions as the pipeline module calls them
    for name in ("refit", "save"):
        wrap(VectorStore, name)
    wrap(SqliteCatalogue, "prepare_search")
    submit = pipeline.InferencePool.submit
    count = [0]

    def counted(self, tag, pixels):
        count[0] += 1
        mark(f"batch {count[0]} to the model ({len(pixels)} photos)")
        return submit(self, tag, pixels)

    pipeline.InferencePool.submit = counted
    init = pipeline.InferencePool.__init__

    def timed_init(self, embed, workers):
        def timed_embed(pixels):
            thread = threading.current_thread().name.rpartition("_")[2]
            mark(f"  thread {thread}: {len(pixels)} photos start")
            try:
                return embed(pixels)
            finally:
                mark(f"  thread {thread}: {len(pixels)} photos end")

        init(self, timed_embed, workers)

    pipeline.InferencePool.__init__ = timed_init
    index = Path(tempfile.mkdtemp(prefix="photoseek-timeline-"))
    summary = pipeline.Indexer(index, Settings(model=model_id), show_progress=False).run([folder])
    mark("done")
    time.sleep(1.1)
    print(summary.line())
    for t, what in marks:
        print(f"{t:7.2f} s  {what}")
    print("busy cores per second: " + " ".join(f"{b:.1f}" for _, b in busy))
    return 0


if __name__ == "__main__":  # the decode workers' fork server must not run this again
    sys.exit(main(sys.argv[1:]))
