"""A step claimed by a process that has exited but is not yet reaped (a zombie) is free again:
the kernel drops a process's flocks when it exits, before its parent collects it."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxyscale.store import Store
from proxyscale.store.layout import pid_alive

KEY = "t/a-0123456789"
CLAIM = "import sys; from proxyscale.store import Store; c = Store(sys.argv[1]).claim(sys.argv[2]); {tail}"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_an_exited_unreaped_holder_leaves_the_step_pending(tmp_path):
    store = Store(tmp_path / "store")
    child = subprocess.Popen([sys.executable, "-c", CLAIM.format(tail="assert c is not None"),
                              str(store.root), KEY])
    try:
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            time.sleep(0.05)  # exited, not reaped: signal 0 still reaches it
        assert not pid_alive(child.pid)
        assert store.state(KEY) == "pending" and store.holder(KEY) is None
    finally:
        child.wait()
    live = subprocess.Popen([sys.executable, "-c", CLAIM.format(tail="print(1, flush=True); import time; "
                                                                     "time.sleep(60)"), str(store.root), KEY],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "1"
        assert store.state(KEY) == "running" and store.holder(KEY)["pid"] == live.pid
        assert pid_alive(live.pid)
    finally:
        live.kill()
        live.wait()
