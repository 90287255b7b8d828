"""Ctrl-C and SIGTERM during `photoseek index` (issue 9).

A Ctrl-C once hung `photoseek index` on a lock (1 try in 5) and otherwise printed
tracebacks from the decode workers. Here the command runs as a user's terminal runs it:
in a pseudo-terminal whose session leader is a tiny shell that puts the command in its
own process group and makes that the terminal's foreground group. A Ctrl-C byte written
to the terminal then makes the terminal driver send SIGINT to the whole job (indexer,
fork server, decode workers), exactly as a keyboard does; and the job's exit hangs up
nobody (the shell stays), so a process it leaves behind stays visible.

Moments: during the scan of a large tree, during start-up and model loading, after 1, 2
and 3 checkpoints (the first run with --rebuild, as reported), as the run finishes
(saving the vector file), SIGTERM to the main process only, and a second Ctrl-C. After
each: the exit code, exactly one line, no traceback from any process, no process of the
job left, the run recorded as interrupted with what it saved, the vector file current;
and a last run completes with every photo indexed once.

Moments are measured on this machine (time to the first checkpoint, checkpoints
counted), not fixed sleeps.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import select
import signal
import sqlite3
import subprocess
import sys
import termios
import textwrap
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from helpers import SMALL_RUN_ENV, cli, generation, last_run_status, make_photos, query_index
from photoseek.indexer import Indexer
from photoseek.indexer.scan import walk
from photoseek.interrupts import StopSignals
from photoseek.store import IndexFiles, VectorStore

N_PHOTOS = 300  # more than five interrupted runs save (each stops within a few batches of 8)
SEED = 9_2024
LINE = re.compile(r"^interrupted: (\d+) photos? saved, run '(photoseek index[^']*)' to continue$")
FINISHED_LINE = re.compile(r"^interrupted as the run finished: (\d+) photos? saved, the index is up to date$")
HARD_LINE = re.compile(r"^stopped at once: the index keeps every photo saved up to its last checkpoint; "
                       r"run '(photoseek index[^']*)' to continue$")
STOP_WITHIN = 15.0  # seconds from the signal to the exit: "a few seconds" here, with room for a busy CI machine
GONE_WITHIN = 3.0  # seconds for every process of the job to be gone once it has exited

# The user's shell, reduced to what matters here: the job in its own process group, in the
# terminal's foreground; the job's pid and exit status reported on a pipe; then wait (so the
# session leader outlives the job, as a shell does, and its exit hangs up nothing).
SHELL = textwrap.dedent("""
    import json, os, signal, subprocess, sys
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # to take the terminal back, as shells do
    signal.signal(signal.SIGINT, lambda *_: None)  # a Ctrl-C after the job is not for the shell (reset on exec)
    status, release = int(sys.argv[1]), int(sys.argv[2])
    job = subprocess.Popen(sys.argv[3:], process_group=0)
    os.tcsetpgrp(0, job.pid)
    os.write(status, (json.dumps({"pid": job.pid}) + "\\n").encode())
    code = job.wait()
    os.tcsetpgrp(0, os.getpgrp())
    os.write(status, (json.dumps({"code": code}) + "\\n").encode())
    os.read(release, 1)
""")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def session_processes(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of session ``sid``, with their command lines. A process
    keeps its session when its parent dies, so nothing escapes this by being orphaned."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
                found[int(entry)] = _cmdline(int(entry))
    return found


class TerminalJob:
    """``photoseek ARGS`` run from a shell in a pseudo-terminal."""

    def __init__(self, args: list[str], env: dict):
        master, slave = os.openpty()
        termios.tcsetwinsize(master, (24, 100))  # a terminal has a size (the progress bar fits itself to it)
        # A terminal throws away output not yet read when Ctrl-C makes its SIGINT (unless NOFLSH): a line
        # printed a moment before the Ctrl-C could vanish before this test read it. Keep everything.
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.NOFLSH
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        status_r, status_w = os.pipe()
        release_r, self._release = os.pipe()
        # The shell: session leader, the terminal as its controlling terminal (TIOCSCTTY on its stdin).
        self.shell = subprocess.Popen(
            [sys.executable, "-c", SHELL, str(status_w), str(release_r), *cli(*args)],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, pass_fds=(status_w, release_r),
            preexec_fn=partial(fcntl.ioctl, 0, termios.TIOCSCTTY, 0))  # nothing to import after the fork
        for fd in (slave, status_w, release_r):
            os.close(fd)
        self.master = master
        self._status = os.fdopen(status_r)
        self.started = time.monotonic()
        self.output = bytearray()
        self.seen: dict[int, str] = {}  # every process of the job seen while it ran
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.pid = json.loads(self._status.readline())["pid"]
        self.code: int | None = None
        self.exited_at: float | None = None
        self.stop_seconds: float | None = None  # from the signal to the exit
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every process of the terminal has closed it
                return
            if not chunk:
                return
            self.output.extend(chunk)

    def _sample(self) -> None:
        while self.code is None:
            for pid, cmd in session_processes(self.shell.pid).items():
                if pid != self.shell.pid:
                    self.seen.setdefault(pid, cmd)
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.code is None and not select.select([self._status], [], [], 0)[0]

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float) -> int:
        ready, _, _ = select.select([self._status], [], [], timeout)
        assert ready, f"photoseek index did not exit within {timeout:.0f} s of the signal:\n{self.text()[-3000:]}"
        self.code = json.loads(self._status.readline())["code"]
        self.exited_at = time.monotonic()
        # The exit can be reported before the reader thread has taken the last output from the terminal:
        # wait until it has been quiet for a moment.
        size, quiet_since = len(self.output), time.monotonic()
        while time.monotonic() - quiet_since < 0.3 and time.monotonic() - self.exited_at < 5:
            time.sleep(0.02)
            if len(self.output) != size:
                size, quiet_since = len(self.output), time.monotonic()
        return self.code

    def leftovers(self) -> dict[int, str]:
        """Processes of the job still there ``GONE_WITHIN`` seconds after it exited."""
        deadline = (self.exited_at or time.monotonic()) + GONE_WITHIN
        while True:
            left = {p: c for p, c in session_processes(self.shell.pid).items() if p != self.shell.pid}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def snapshot(self) -> str:
        """For a run that stalls: each of its processes with its state, CPU seconds and where in the
        kernel it waits, then the terminal's last lines."""
        rows = []
        for pid, cmd in session_processes(self.shell.pid).items():
            fields = _proc_stat(pid) or ["?"] * 14
            try:
                wchan = Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                wchan = "?"
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields[11].isdigit() else "?"
            rows.append(f"{pid} {fields[0]} cpu={cpu}s wchan={wchan} {cmd[:120]}")
        return "\n".join(rows) + "\n--- terminal:\n" + self.text()[-2000:]

    def lines(self) -> list[str]:
        """What the terminal shows: each line as its last carriage return left it."""
        return [line.split("\r")[-1] if line.split("\r")[-1].strip() else line.replace("\r", "")
                for line in self.text().replace("\r\n", "\n").split("\n")]

    def close(self) -> None:
        for pid in self.leftovers() if self.code is not None else session_processes(self.shell.pid):
            if pid != self.shell.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        os.close(self._release)
        self.shell.wait(30)
        self._reader.join(5)
        os.close(self.master)
        self._status.close()


def our_lines(job: TerminalJob) -> list[str]:
    """The lines photoseek printed, without progress bars and the terminal's echo of ^C."""
    out = []
    for line in job.lines():
        line = line.replace("^C", "").strip()
        if line and not ("img/s" in line or "img]" in line or "%|" in line):
            out.append(line)
    return out


def check_clean_exit(job: TerminalJob, code: int, started_signal: float) -> None:
    text = job.text()
    for bad in ("Traceback", "Exception ignored", "KeyboardInterrupt", "Warning", "Aborted"):
        assert bad not in text, text[-4000:]
    assert job.code == code, (job.code, text[-3000:])
    assert job.exited_at - started_signal < STOP_WITHIN
    left = job.leftovers()
    assert not left, f"processes of the job still there {GONE_WITHIN} s after it exited: {left}"


def run_row(index: Path) -> list[str]:
    """status, added, updated of the index's newest run."""
    return query_index(index, "SELECT status || ',' || added || ',' || updated FROM runs ORDER BY id DESC LIMIT 1",
                       "").split(",")


def photos_in(index: Path) -> int:
    return query_index(index, "SELECT count(*) FROM images", 0)


def statuses(index: Path) -> list[str]:
    con = sqlite3.connect(f"file:{IndexFiles(index).database}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in con.execute("SELECT status FROM runs ORDER BY id")]
    finally:
        con.close()


def check_vectors_current(index: Path) -> None:
    """The vector file holds exactly what the database committed (a graceful stop saves it)."""
    dim = int(query_index(index, "SELECT value FROM meta WHERE key = 'dim'", 0))
    store = VectorStore.load(IndexFiles(index).vectors, dim=dim, generation=generation(index))
    assert store is not None and len(store) == photos_in(index), "vector file not saved for what was committed"


def wait_until(condition, job: TerminalJob, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert job.alive(), f"the run ended before {what}:\n{job.text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s:\n{job.snapshot()}"
        time.sleep(0.005)


def run_started(index: Path, job: TerminalJob) -> None:
    """Wait for the job's run to be recorded (every earlier run of these tests ended interrupted or finished)."""
    wait_until(lambda: last_run_status(index) == "running", job, "the run started")


def interrupted_once(job: TerminalJob, index: Path, *, signum: int = signal.SIGINT) -> int:
    """Send the signal now (Ctrl-C on the terminal, or SIGTERM to the indexer alone) and check
    the exit; return how many photos the run says it saved."""
    sent = time.monotonic()
    if signum == signal.SIGINT:
        job.ctrl_c()
    else:
        os.kill(job.pid, signum)
    job.wait(STOP_WITHIN + 60)
    check_clean_exit(job, 128 + signum, sent)
    job.stop_seconds = job.exited_at - sent
    lines = our_lines(job)
    assert len(lines) == 1 and LINE.match(lines[0]), lines
    saved = int(LINE.match(lines[0]).group(1))
    assert "--rebuild" not in lines[0]  # the way to continue must not start again
    status, added, updated = run_row(index)
    assert status == "interrupted" and int(added) + int(updated) == saved, (status, added, updated, saved)
    if saved:
        check_vectors_current(index)
    return saved


def finish_and_check(index: Path, env: dict, expected: int) -> None:
    """A plain run afterwards completes, and the index holds every photo once."""
    done = subprocess.run(cli("index", "--index", str(index), "--no-progress"), env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert last_run_status(index) == "finished" and "running" not in statuses(index)
    assert photos_in(index) == expected == query_index(index, "SELECT count(DISTINCT path) FROM images", 0)
    check_vectors_current(index)


def job_env(decode_workers: int, **extra: str) -> dict:
    return {**os.environ, **SMALL_RUN_ENV, "PHOTOSEEK_DECODE_WORKERS": str(decode_workers), **extra}


@pytest.fixture(scope="module", autouse=True)
def _first_run_done(offline_encoder):
    """What a model's first run does once (conftest's offline_encoder: the OpenVINO conversion) is
    done before any run here is timed or interrupted."""


@pytest.fixture(scope="module")
def photos(tmp_path_factory, samples_dir, offline_encoder) -> Path:
    folder = tmp_path_factory.mktemp("interrupts") / "photos"
    make_photos(folder, samples_dir, 0, N_PHOTOS)
    # The tests pace their interrupts by a first run's time to its first batch: with the session's
    # cache still empty, that includes the encoder's one-off class matrix and overstates the pace.
    assert offline_encoder.prepare_images()
    return folder


@pytest.mark.slow
def test_ctrl_c_at_many_moments_and_sigterm_then_resume(tmp_path, photos):
    """Seven interrupts of one index: each exits cleanly and saves what it did; then a run completes."""
    rng = random.Random(SEED)
    index = tmp_path / "index"
    env = job_env(2)  # two decode workers (one per core, the default here): more processes to leave behind
    saved, moments = 0, []

    def start(*extra: str) -> TerminalJob:
        return TerminalJob(["index", str(photos), "--index", str(index), "--model", "offline", *extra], env)

    # 1. The report's case: --rebuild, Ctrl-C after two batches. It also measures this machine's pace.
    job = start("--rebuild")
    try:
        run_started(index, job)
        running_at = time.monotonic()
        wait_until(lambda: generation(index) >= 2, job, "a first batch")  # checkpoint 1 is the scan's changes
        to_first_batch = time.monotonic() - running_at  # plan, model loading, first decodes and batch
        wait_until(lambda: generation(index) >= 3, job, "a second batch")
        saved += interrupted_once(job, index)
        moments.append(f"--rebuild, after 2 batches: stopped in {job.stop_seconds:.1f} s")
        assert sum("forkserver" in cmd for cmd in job.seen.values()) >= 2, job.seen  # fork server and workers ran
    finally:
        job.close()

    # 2-3. Anywhere between the run's start and its first batch: scan, model loading, first decodes.
    for _ in range(2):
        job = start()
        try:
            run_started(index, job)
            delay = rng.uniform(0.0, to_first_batch)
            time.sleep(delay)
            saved += interrupted_once(job, index)
            moments.append(f"{delay:.2f} s after the run started: stopped in {job.stop_seconds:.1f} s")
        finally:
            job.close()

    # 4-5. After 1 or 3 batches, then a pause of up to a tenth of that time: mid-batch, mid-commit.
    for batches in (1, 3):
        job = start()
        try:
            run_started(index, job)
            gen = generation(index)
            wait_until(lambda: generation(index) >= gen + 1 + batches, job, f"{batches} batches")
            pause = rng.uniform(0.0, 0.1 * to_first_batch)
            time.sleep(pause)
            saved += interrupted_once(job, index)
            moments.append(f"{pause:.2f} s after {batches} batch(es): stopped in {job.stop_seconds:.1f} s")
        finally:
            job.close()

    # 6. SIGTERM to the indexer alone (a service manager, `kill PID`): its workers get no signal.
    job = start()
    try:
        run_started(index, job)
        gen = generation(index)
        wait_until(lambda: generation(index) >= gen + 3, job, "2 batches")
        saved += interrupted_once(job, index, signum=signal.SIGTERM)
        moments.append(f"SIGTERM after 2 batches: stopped in {job.stop_seconds:.1f} s")
    finally:
        job.close()
    assert photos_in(index) == saved < N_PHOTOS

    # 7. As the run finishes: last commit made, the vector file being saved, the process exiting.
    job = start()
    try:
        run_started(index, job)
        while job.alive() and last_run_status(index) != "finished":
            time.sleep(0.002)
        sent = time.monotonic()
        job.ctrl_c()
        job.wait(STOP_WITHIN + 60)
        check_clean_exit(job, job.code, sent)
        lines = our_lines(job)
        if job.code == 130:  # the signal came before the command was done: say so, and exit as interrupted
            assert len(lines) == 1 and FINISHED_LINE.match(lines[0]), lines
        else:  # it came after: the run had ended normally
            assert job.code == 0 and lines and lines[0].startswith("added "), (job.code, job.text()[-2000:])
        moments.append(f"as the run finished: exit {job.code} in {job.exited_at - sent:.1f} s")
    finally:
        job.close()
    assert last_run_status(index) == "finished" and photos_in(index) == N_PHOTOS
    check_vectors_current(index)

    finish_and_check(index, env, N_PHOTOS)
    assert statuses(index) == ["interrupted"] * 6 + ["finished"] * 2
    print("\n".join(["interrupts:", *moments, f"photos saved by the interrupted runs: {saved}"]))


@pytest.mark.slow
def test_ctrl_c_while_scanning_a_large_tree_changes_nothing(tmp_path, samples_dir):
    """A scan cut short must not be taken for a scan that found nothing (which would delete photos)."""
    tree = tmp_path / "tree"
    make_photos(tree / "photos", samples_dir, 0, 12)
    index = tmp_path / "index"
    env = job_env(1)
    # Files that are not photos (no extension: the scan reads their first bytes), as many as this
    # machine scans in about a second.
    made = _junk(tree, 0, 10_000)
    started = time.perf_counter()
    sum(1 for _ in walk(tree))
    seconds = time.perf_counter() - started
    made = _junk(tree, made, min(400_000, int(made * 1.0 / max(seconds, 1e-3))) - made)

    job = TerminalJob(["index", str(tree), "--index", str(index), "--model", "offline"], env)
    try:
        run_started(index, job)
        assert interrupted_once(job, index) == 0
        print(f"Ctrl-C during a scan of {made} files: stopped in {job.stop_seconds:.1f} s")
    finally:
        job.close()
    # Nothing was applied: no checkpoint at all (the scan's changes are the first one).
    assert generation(index) == 0 and photos_in(index) == 0 and statuses(index) == ["interrupted"]
    finish_and_check(index, env, 12)


def _junk(tree: Path, start: int, count: int) -> int:
    """Files that are not photos, 25 a folder: hard links to one (new files cost 10 times more to make)."""
    for n in range(start, start + max(0, count)):
        folder = os.path.join(tree, f"junk{n // 2500:03d}", f"d{n // 25:05d}")
        if n % 25 == 0:
            os.makedirs(folder, exist_ok=True)
        target = tree / f"junk-note-{n // 20_000}"  # ext4 allows 65,000 links to a file
        if n % 20_000 == 0 or not target.exists():
            target.write_bytes(b"not a photo")
        os.link(target, os.path.join(folder, f"note{n % 25:02d}"))
    return start + max(0, count)


@pytest.mark.slow
def test_second_ctrl_c_ends_a_slow_stop_at_once(tmp_path, samples_dir):
    """A stop slowed down by a decode worker that does not finish (stopped here with SIGSTOP, as a
    worker stuck on a huge photo would be): a second Ctrl-C ends everything at once."""
    photos = tmp_path / "photos"
    count = 200  # more than the indexer decodes ahead while its model loads (128): workers still at work
    make_photos(photos, samples_dir, 0, count)
    index = tmp_path / "index"
    env = job_env(2)
    job = TerminalJob(["index", str(photos), "--index", str(index), "--model", "offline"], env)
    try:
        run_started(index, job)
        wait_until(lambda: generation(index) >= 2, job, "a first batch")
        workers = [pid for pid, cmd in session_processes(job.shell.pid).items()
                   if "forkserver" in cmd and _parent(pid) != job.pid]  # the fork server's children
        assert workers, session_processes(job.shell.pid)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        job.ctrl_c()
        time.sleep(0.2)  # the first stop now waits (up to a second) for the stuck workers
        sent = time.monotonic()
        job.ctrl_c()
        job.wait(STOP_WITHIN + 60)
        assert job.exited_at - sent < 1.0, job.exited_at - sent  # at once, not after the workers' grace time
        print(f"second Ctrl-C: exited in {job.exited_at - sent:.2f} s")
        check_clean_exit(job, 130, sent)
        lines = our_lines(job)
        assert len(lines) == 1 and HARD_LINE.match(lines[0]), lines
        assert "leaked" not in job.text()  # the resource tracker cleans up after the hard exit, quietly
    finally:
        job.close()
    assert last_run_status(index) == "running"  # a hard exit records nothing: the next run marks it interrupted
    finish_and_check(index, env, count)
    assert statuses(index) == ["interrupted", "finished"]


def _parent(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[1]) if fields else None


# -- the signal handling itself, without an index -------------------------------------------------

STOPPING = textwrap.dedent("""
    import os, sys, time
    from photoseek.interrupts import StopSignals, at_hard_exit
    at_hard_exit(lambda: open(sys.argv[1], "w").write("hook ran"))
    stop = StopSignals(hard_exit_message="stopped at once").install()
    print("ready", flush=True)
    stop.event.wait(60)
    print("stopping", stop.signum, flush=True)
    time.sleep(60)  # a stop that takes its time
    print("stopped", flush=True)
""")


@pytest.mark.parametrize("first,second,code", [(signal.SIGINT, signal.SIGINT, 130),
                                               (signal.SIGTERM, signal.SIGINT, 130),
                                               (signal.SIGINT, signal.SIGTERM, 143)])
def test_second_signal_exits_at_once(tmp_path, first, second, code):
    marker = tmp_path / "hook"
    proc = subprocess.Popen([sys.executable, "-c", STOPPING, str(marker)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(first)
        assert proc.stdout.readline() == f"stopping {int(first)}\n"
        sent = time.monotonic()
        proc.send_signal(second)
        proc.wait(30)
        assert time.monotonic() - sent < 2.0
    finally:
        proc.kill()
    stderr = proc.stderr.read()
    assert proc.returncode == code and stderr.strip() == "stopped at once", (proc.returncode, stderr)
    assert marker.read_text() == "hook ran"


def test_handlers_only_in_the_main_thread_and_restored():
    before = {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS}
    with StopSignals() as stop:
        assert stop.installed and signal.getsignal(signal.SIGINT) == stop._handle
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(5) and stop.exit_code == 143  # the first signal only asks
    assert {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS} == before

    in_thread = []
    thread = threading.Thread(target=lambda: in_thread.append(StopSignals().install().installed))
    thread.start()
    thread.join()
    assert in_thread == [False] and {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS} == before


def test_library_stop_from_another_thread(tmp_path, samples_dir, offline_encoder, settings_factory):
    """The Indexer as a library: a stop set from another thread ends the run after a few batches,
    records it, saves the vectors, and leaves no decode worker running."""
    photos, index = tmp_path / "photos", tmp_path / "index"
    make_photos(photos, samples_dir, 0, 120)
    stop = threading.Event()
    indexer = Indexer(index, settings_factory(index, batch_size=8), show_progress=False, stop=stop)

    def stopper():
        while generation(index) < 3 and not done.is_set():
            time.sleep(0.005)
        stop.set()

    done = threading.Event()
    watcher = threading.Thread(target=stopper)
    watcher.start()
    try:
        summary = indexer.run([photos], encoder=offline_encoder)
    finally:
        done.set()
        watcher.join()
    assert summary.interrupted and 16 <= summary.saved < 120
    assert run_row(index) == ["interrupted", str(summary.added), "0"] and photos_in(index) == summary.saved
    check_vectors_current(index)
    # The fork server (shared by the whole test session) stays; its workers are gone.
    children = {pid: _parent(pid) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))}
    servers = [pid for pid, parent in children.items() if parent == os.getpid() and "forkserver" in _cmdline(pid)]
    assert servers and not [pid for pid, parent in children.items() if parent in servers and _alive(pid)]

    again = Indexer(index, settings_factory(index), show_progress=False).run([photos], encoder=offline_encoder)
    assert not again.interrupted and photos_in(index) == 120


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def test_ctrl_c_while_a_first_run_prepares_the_encoder(tmp_path, samples_dir, settings_factory, monkeypatch):
    """On a new machine the offline encoder's first run embeds its 1,000 class prompts (seconds)
    before the first batch; a stop during that ends the run within one chunk of prompts, saves
    nothing half-made (no class matrix cached), and the next run computes it and completes."""
    from photoseek.encoders import load_encoder, offline

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "new-machine-cache"))
    photos, index = tmp_path / "photos", tmp_path / "index"
    make_photos(photos, samples_dir, 0, 12)
    stop = threading.Event()
    chunks = []
    embed = offline.embed_texts

    def embed_and_press_ctrl_c(model, texts, **kw):
        chunks.append(len(texts))
        stop.set()  # as if the user pressed Ctrl-C while this chunk is being embedded
        return embed(model, texts, **kw)

    monkeypatch.setattr(offline, "embed_texts", embed_and_press_ctrl_c)
    encoder = load_encoder("offline")
    summary = Indexer(index, settings_factory(index), show_progress=False, stop=stop).run([photos], encoder=encoder)
    assert summary.interrupted and summary.saved == 0 and photos_in(index) == 0, chunks
    assert chunks == [offline._CLASS_PROMPTS_PER_CHUNK]  # one chunk of 1,000 prompts, then it stopped
    assert not list(offline.cache_dir().glob("classes-*.npy"))

    monkeypatch.setattr(offline, "embed_texts", embed)
    again = Indexer(index, settings_factory(index), show_progress=False).run([photos], encoder=encoder)
    assert not again.interrupted and photos_in(index) == 12
    assert len(list(offline.cache_dir().glob("classes-*.npy"))) == 1
