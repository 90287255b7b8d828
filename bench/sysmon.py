"""What the machine is doing while we measure: memory of a process tree, and CPU taken by others.

Linux ``/proc`` only (no psutil needed); elsewhere the numbers come out as ``None``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return kids
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(pid)
    return kids


def process_tree(root: int) -> list[int]:
    kids = _children()
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _own_cpu(pid: int) -> float | None:
    """utime + stime of one process (its own threads, not its children), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        fields = raw[raw.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
            fields = raw[raw.rindex(b")") + 2:].split()
            # utime + stime, plus cutime + cstime: children already reaped (a finished subprocess).
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICKS


def machine_busy_seconds() -> float | None:
    """CPU-seconds spent busy by the whole machine since boot (all cores)."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICKS


@dataclass
class TreeUsage:
    peak_rss_mb: float = 0.0  # sum of RSS over the tree (counts shared pages once per process)
    peak_pss_mb: float = 0.0  # sum of PSS: shared pages split between sharers (the honest total)
    peak_main_rss_mb: float = 0.0
    main_hwm_mb: float = 0.0  # the main process's own peak RSS as the kernel counted it (VmHWM): no sampling gaps
    children_peak_rss_mb: float = 0.0  # the most the other processes of the tree held at once (sampled)
    peak_processes: int = 0
    samples: int = 0


class TreeSampler:
    """Samples a process and its descendants every ``interval`` seconds until stopped.

    Besides memory it keeps the CPU time each process was last seen with: processes that
    leave the tree early (decode workers, a fork server reparented when its parent exits)
    still count, which CPU time inherited through wait() would not always do.
    """

    def __init__(self, pid: int, interval: float = 0.1, pss_every: int = 5):
        self.pid = pid
        self.interval = interval
        self.pss_every = pss_every
        self.usage = TreeUsage()
        self.cpu_by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        u = self.usage
        while True:
            pids = process_tree(self.pid)
            for p in pids:
                cpu = _own_cpu(p)
                if cpu is not None and cpu >= self.cpu_by_pid.get(p, 0.0):
                    self.cpu_by_pid[p] = cpu
            rss = [_rss_bytes(p) for p in pids]
            main = rss[0] if rss else 0
            if main == 0 and u.samples:
                break  # the process is gone
            u.peak_rss_mb = max(u.peak_rss_mb, sum(rss) / 2**20)
            u.peak_main_rss_mb = max(u.peak_main_rss_mb, main / 2**20)
            u.main_hwm_mb = max(u.main_hwm_mb, _hwm_bytes(pids[0]) / 2**20)
            u.children_peak_rss_mb = max(u.children_peak_rss_mb, sum(rss[1:]) / 2**20)
            u.peak_processes = max(u.peak_processes, len(pids))
            if u.samples % self.pss_every == 0:
                u.peak_pss_mb = max(u.peak_pss_mb, sum(_pss_bytes(p) for p in pids) / 2**20)
            u.samples += 1
            if self._stop.wait(self.interval):
                break


class OthersMeter:
    """How much CPU other processes took while we measured (0 = we had the machine to ourselves).

    ``share`` is their CPU-seconds over the wall time times the core count. Ours is this
    process (all its threads) plus whatever the given TreeSampler instances saw.
    """

    def __init__(self, *samplers: TreeSampler):
        self.samplers = list(samplers)
        self.share: float | None = None

    def add(self, sampler: TreeSampler) -> None:
        self.samplers.append(sampler)

    def __enter__(self) -> OthersMeter:
        self._t = time.perf_counter()
        self._busy = machine_busy_seconds()
        self._own = time.process_time()
        self._tree = cpu_seconds(process_tree(os.getpid())[1:])  # children alive already (seldom any)
        return self

    def __exit__(self, *exc) -> None:
        busy = machine_busy_seconds()
        if busy is None or self._busy is None:
            return
        wall = time.perf_counter() - self._t
        own = time.process_time() - self._own
        own += sum(sum(s.cpu_by_pid.values()) for s in self.samplers)
        if not self.samplers:
            own += max(0.0, cpu_seconds(process_tree(os.getpid())[1:]) - self._tree)
        cores = os.cpu_count() or 1
        self.share = min(1.0, max(0.0, busy - self._busy - own) / max(1e-9, wall * cores))


@dataclass
class MeasuredRun:
    """A command run to its end with its process tree's memory and the others' CPU share sampled."""

    returncode: int
    out: str
    err: str
    wall: float
    usage: TreeUsage
    others_share: float | None


def run_measured(cmd: list[str], env: dict[str, str], cwd: str | os.PathLike | None = None) -> MeasuredRun:
    """``cmd`` run in ``cwd`` (rclip indexes and searches its working directory)."""
    import subprocess

    with OthersMeter() as others:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with TreeSampler(proc.pid) as sampler:
            others.add(sampler)
            out, err = proc.communicate()
        wall = time.perf_counter() - started
    return MeasuredRun(proc.returncode, out, err, wall, sampler.usage, others.share)


def wait_until_quiet(max_wait: float, threshold: float = 0.15, window: float = 2.0, echo=print) -> float | None:
    """Wait (up to ``max_wait`` s) for a ``window`` in which other processes use < ``threshold`` of the CPU."""
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        with OthersMeter() as m:
            time.sleep(window)
        if m.share is None or m.share < threshold or time.monotonic() > deadline:
            return m.share
        if not said:
            echo(f"  (machine busy: other processes use {m.share:.0%} of the CPU; waiting up to {max_wait:.0f} s for quiet)")
            said = True
