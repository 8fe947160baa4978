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


def _stats() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, clock ticks: own user+system and reaped children's)."""
    found: dict[int, tuple[int, int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name, in parentheses, may hold spaces: split after it.
        fields = text[text.rindex(")") + 2:].split()
        # proc(5): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
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
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


def command_of(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""
