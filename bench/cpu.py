"""CPU time a server spends on a run, read from /proc (Linux).

A server's work for the daemon is done in processes it forks per connection
(Dovecot's ``imap``, PostgreSQL's backends), which exit when the daemon
does. Their time is kept: the kernel adds an exited child's time to its
parent's ``cutime``/``cstime`` once the parent reaps it (proc(5)). So the
time of a process tree is its root's own time, its reaped children's, and
that of every descendant still alive; the difference between two readings
is what the tree spent in between, whether its children lived through it
or not.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None when
    the process is gone. proc(5) numbers the fields from 1; here field n is
    at index n - 3 (ppid 4 at 1, utime 14 to cstime 17 at 11 to 14)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: split after it.
    return text[text.rindex(")") + 2:].split()


def _stats() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, clock ticks: own user+system and reaped children's)."""
    found: dict[int, tuple[int, int]] = {}
    for entry in _PROC.iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None:
            found[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return found


def tree_seconds(root: int) -> float:
    """CPU seconds of ``root`` and all its descendants, live or reaped; NaN
    where /proc cannot tell (not Linux, or ``root`` is gone)."""
    try:
        stats = _stats()
    except OSError:
        return float("nan")
    if root not in stats:
        return float("nan")
    children: dict[int, list[int]] = {}
    for pid, (parent, _ticks) in stats.items():
        children.setdefault(parent, []).append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        ticks += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return ticks / os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> int | None:
    """The parent of a live process, or None when it is gone."""
    fields = _stat(pid)
    return int(fields[1]) if fields is not None else None


def command_line(pid: int) -> str:
    """The process's command line (a PostgreSQL backend shows its client
    there), "" when it is gone."""
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""
