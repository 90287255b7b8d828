"""``photoseek index`` end to end, as a user runs it: a fresh process, a cold (empty) index,
to the final summary line. Memory of the whole process tree (decode workers included) is
sampled while it runs."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from sysmon import run_measured

SUMMARY = re.compile(r"added (\d+), updated (\d+), moved (\d+), removed (\d+), skipped (\d+), unchanged (\d+) "
                     r"in ([\d.]+) s(?: \(|, )([\d.]+) images/s")


@dataclass
class IndexRun:
    images: int
    embedded: int
    skipped: int
    summary_seconds: float  # the run as photoseek reports it: model load, scan, decode, embed, save
    summary_ips: float
    wall_seconds: float  # the whole command, Python start-up and imports included
    wall_ips: float
    peak_rss_mb: float  # sum over the process tree (shared pages counted in every process)
    peak_pss_mb: float  # sum of proportional set sizes over the tree (shared pages counted once)
    peak_main_rss_mb: float
    main_hwm_mb: float  # the main process's peak as the kernel counted it (sampling misses short peaks)
    peak_rss_bound_mb: float  # main_hwm_mb + the children's sampled peak: the tree's peak is at most this
    peak_processes: int
    others_cpu_share: float | None
    summary_line: str

    def as_dict(self) -> dict:
        return asdict(self)


def run_index(folder: Path, model_id: str, *, images: int, env_overrides: dict[str, str] | None = None,
              keep_index: Path | None = None) -> IndexRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEEK_")}  # photoseek's defaults
    env["HF_HUB_OFFLINE"] = "1"
    env.update(env_overrides or {})
    index_dir = Path(tempfile.mkdtemp(prefix="photoseek-bench-index-"))
    cmd = [sys.executable, "-m", "photoseek", "index", str(folder), "--index", str(index_dir),
           "--model", model_id, "--no-progress"]
    try:
        # Run from the index folder: 'python -m' puts the working directory first on sys.path, and a
        # checkout there would shadow the photoseek that PYTHONPATH names (index_bound.py --before).
        run = run_measured(cmd, env, cwd=str(index_dir))
        out, err, wall, u = run.out, run.err, run.wall, run.usage
        if run.returncode != 0:
            raise RuntimeError(f"photoseek index failed ({run.returncode}):\n{err[-3000:]}")
        line = next((ln for ln in out.splitlines() if SUMMARY.search(ln)), None)
        if line is None:
            raise RuntimeError(f"no summary line in photoseek's output:\n{out[-2000:]}\n{err[-2000:]}")
        m = SUMMARY.search(line)
        added, updated, skipped = int(m.group(1)), int(m.group(2)), int(m.group(5))
        seconds = float(m.group(7))
        embedded = added + updated
        if keep_index is not None:
            if keep_index.exists():
                shutil.rmtree(keep_index)
            shutil.copytree(index_dir, keep_index)
        return IndexRun(
            images=images, embedded=embedded, skipped=skipped, summary_seconds=seconds,
            summary_ips=embedded / seconds if seconds else 0.0, wall_seconds=wall, wall_ips=embedded / wall,
            peak_rss_mb=u.peak_rss_mb, peak_pss_mb=u.peak_pss_mb, peak_main_rss_mb=u.peak_main_rss_mb,
            main_hwm_mb=u.main_hwm_mb, peak_rss_bound_mb=u.main_hwm_mb + u.children_peak_rss_mb,
            peak_processes=u.peak_processes, others_cpu_share=run.others_share, summary_line=line.strip(),
        )
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
