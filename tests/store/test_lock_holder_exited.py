"""A step lock whose process has exited but is not yet reaped (a zombie) does not hold the step."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxyscale.store import Store, write_json


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_an_exited_unreaped_holder_leaves_the_step_pending(tmp_path):
    store = Store(tmp_path / "store")
    key = "t/a-0123456789"
    part = store.begin(key)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        write_json(part / "_lock.json", {"pid": child.pid, "host": socket.gethostname()})
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            time.sleep(0.05)  # exited, not reaped: signal 0 still reaches it
        assert store.state(key) == "pending"
    finally:
        child.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_json(part / "_lock.json", {"pid": live.pid, "host": socket.gethostname()})
        assert store.state(key) == "running"
    finally:
        live.kill()
        live.wait()
