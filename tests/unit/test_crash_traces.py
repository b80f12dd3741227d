"""A daemon that dies in native code says where: every thread's Python stack on stderr."""

from __future__ import annotations

import subprocess
import sys

CRASH = """
import ctypes, threading
from localvmss.daemon import enable_crash_traces
enable_crash_traces()
threading.Thread(target=lambda: threading.Event().wait(30), name="worker", daemon=True).start()
def reading_domain_statistics():
    ctypes.string_at(0)  # a NULL read, as a native library bug would do
reading_domain_statistics()
"""


def test_a_segfault_prints_the_python_stack_of_every_thread() -> None:
    done = subprocess.run([sys.executable, "-c", CRASH], capture_output=True, text=True, timeout=60)
    assert done.returncode < 0, f"the process did not die of a signal: {done.returncode}"
    assert "Fatal Python error: Segmentation fault" in done.stderr, done.stderr
    assert "reading_domain_statistics" in done.stderr, "the crashing thread's stack is shown"
    assert done.stderr.count("hread 0x") >= 2, "every thread's stack is shown ('Thread 0x...', 'Current thread 0x...')"
