"""bench.cpu counts a process tree's CPU time, the time of children that
have exited and been reaped included: what a server's per-connection
processes spent, read after the daemon (and so they) went away."""

from __future__ import annotations

import math
import subprocess
import sys

from bench import cpu

BURN = 0.3  # CPU seconds the grandchild spends
# The child starts a grandchild that burns BURN seconds of CPU and exits, reaps
# it, says so, then waits to be told to exit: its own time is start-up only.
_CHILD = f"""
import subprocess, sys
burn = "import time\\nwhile time.process_time() < {BURN}: pass"
subprocess.run([sys.executable, "-c", burn], check=True)
print("reaped", flush=True)
sys.stdin.read()
"""


def test_reaped_children_count_towards_the_tree() -> None:
    with subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdin is not None
        before = cpu.tree_seconds(child.pid)
        assert child.stdout.readline().strip() == "reaped"
        after = cpu.tree_seconds(child.pid)
        # The grandchild is gone: only its reaped time can account for this.
        assert after - before >= BURN * 0.9
        assert cpu.parent_of(child.pid) is not None
        assert "-c" in cpu.command_line(child.pid)
        child.stdin.close()
    # Exited and reaped: its pid no longer answers.
    assert math.isnan(cpu.tree_seconds(child.pid))
    assert cpu.parent_of(child.pid) is None


_BURNING_PARENT = f"""
import subprocess, sys
burn = ("import sys, time\\nwhile time.process_time() < {BURN}: pass\\n"
        "print(flush=True)\\nsys.stdin.read()")
grandchild = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
grandchild.stdout.readline()
print("burnt", flush=True)
sys.stdin.read()
grandchild.stdin.close()
grandchild.wait()
"""


def test_live_descendants_count_towards_the_tree() -> None:
    with subprocess.Popen([sys.executable, "-c", _BURNING_PARENT], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "burnt"
        # The grandchild has burnt its time and is still alive, not reaped.
        assert cpu.tree_seconds(child.pid) >= BURN * 0.9
        child.stdin.close()
