"""Walking photo folders: which files are candidates, and which cannot even be looked at."""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from photoseek.files import is_under
from photoseek.imaging import looks_like_image


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute, as the file system spells it (may hold undecodable bytes)
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Unreadable:
    """A folder or file the walk could not enter; recorded as skipped, with the reason."""

    path: str
    reason: str


def _excluded(rel: str, name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def walk(
    root: Path,
    *,
    all_roots: list[Path] | None = None,
    exclude: Iterable[str] = (),
    include_hidden: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[FoundFile | Unreadable]:
    """Yield every image-like file below ``root``, depth first, in a stable order.

    Symbolic links are followed only when they resolve inside an indexed root (so a
    link cannot pull in files from elsewhere), and every real folder is entered once
    (so link loops end). Hidden files and folders are left out unless asked for.

    ``stop``: once set, the walk ends early (checked between files, so a tree of thousands
    of files that are not photos cannot keep a stopping run waiting).
    """
    root_str = os.path.realpath(root)
    real_roots = [os.path.realpath(r) for r in (all_roots or [root])]
    if root_str not in real_roots:
        real_roots.append(root_str)
    patterns = tuple(exclude)
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root_str]
    while stack:
        if stop is not None and stop.is_set():
            return
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            yield Unreadable(folder, "cannot read folder: permission denied")
            continue
        except OSError as exc:
            yield Unreadable(folder, f"cannot read folder: {exc.strerror or exc}")
            continue
        subfolders = []
        for entry in entries:
            if stop is not None and stop.is_set():
                return
            name = entry.name
            if not include_hidden and name.startswith("."):
                continue
            rel = os.path.relpath(entry.path, root_str)
            if patterns and _excluded(rel, name, patterns):
                continue
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not is_under(target, real_roots, or_equal=True):
                        if os.path.isdir(target) or looks_like_image(Path(entry.path)):
                            yield Unreadable(entry.path, "symbolic link points outside the indexed folders")
                        continue
                    st = os.stat(entry.path)
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError as exc:  # dangling link, vanished file, no permission
                yield Unreadable(entry.path, f"cannot read: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(st.st_mode):
                subfolders.append(entry.path)
            elif stat.S_ISREG(st.st_mode) and looks_like_image(Path(entry.path)):
                yield FoundFile(entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subfolders))
