"""`stream.worker.freeze_heap`: the long-lived heap leaves the cyclic collector's passes, new cyclic garbage is
still collected (run in a child interpreter: a frozen heap must not leak into the test process)."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_freeze_heap_keeps_collecting_new_cycles():
    code = textwrap.dedent("""
        import gc, weakref
        from stream.worker import freeze_heap
        freeze_heap()
        assert gc.isenabled() and gc.get_freeze_count() > 1000, gc.get_freeze_count()
        class Node: pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        probe = weakref.ref(a)
        del a, b
        gc.collect()
        assert probe() is None, "a cycle made after the freeze was not collected"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
