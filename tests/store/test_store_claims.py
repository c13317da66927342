"""Step claims (flock) and the sums recorded when a step finishes."""
from __future__ import annotations

import multiprocessing as mp

import pytest

from proxyscale.store import CorruptStep, Store, read_json, write_json

KEY = "t/a-0123456789ab"


def _claim_in_child(root: str, key: str, q) -> None:
    q.put(Store(root).claim(key) is not None)


def test_a_claim_excludes_other_processes_until_released(tmp_path):
    store = Store(tmp_path)
    claim = store.claim(KEY)
    assert claim is not None and store.state(KEY) == "running"
    assert store.holder(KEY)["pid"] > 0
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_claim_in_child, args=(str(tmp_path), KEY, q))
    p.start()
    p.join(60)
    assert q.get(timeout=5) is False  # another process cannot take it
    claim.release()
    assert store.state(KEY) == "pending" and store.holder(KEY) is None
    p = ctx.Process(target=_claim_in_child, args=(str(tmp_path), KEY, q))
    p.start()
    p.join(60)
    assert q.get(timeout=5) is True


def test_a_claim_dies_with_its_process(tmp_path):
    """A killed holder leaves no stale claim: the kernel drops the flock with the process."""
    store = Store(tmp_path)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_claim_in_child, args=(str(tmp_path), KEY, q))
    p.start()
    p.join(60)
    assert q.get(timeout=5) is True
    assert store.state(KEY) == "pending" and store.claim(KEY) is not None


def test_finish_records_sums_and_check_finds_every_kind_of_damage(tmp_path):
    store = Store(tmp_path)
    claim = store.claim(KEY)
    (claim.dir / "sub").mkdir()
    (claim.dir / "sub" / "w.bin").write_bytes(bytes(range(256)) * 64)
    write_json(claim.dir / "v.json", {"value": 1})
    final = store.finish(claim, {"kind": "t"})
    files = read_json(final / "_step.json")["files"]
    assert set(files) == {"sub/w.bin", "v.json"} and files["sub/w.bin"]["bytes"] == 256 * 64
    assert store.problems(KEY) == [] and store.state(KEY) == "done"
    assert store.claim(KEY) is None  # done: nothing to claim

    data = bytearray((final / "sub" / "w.bin").read_bytes())
    data[1000] ^= 0x01  # one bit flipped, same size
    (final / "sub" / "w.bin").write_bytes(bytes(data))
    assert store.problems(KEY, full=False) == []  # sizes alone cannot see it
    assert store.problems(KEY) == ["sub/w.bin changed since it was written (sha256 differs)"]
    (final / "sub" / "w.bin").write_bytes(bytes(data[:500]))  # truncated
    assert "500 bytes" in store.problems(KEY, full=False)[0]
    (final / "v.json").unlink()
    with pytest.raises(CorruptStep, match="v.json is missing") as e:
        store.check(KEY)
    assert "\n" not in str(e.value)

    old = store.quarantine(KEY)
    assert old["files"] == files and not store.is_done(KEY) and store.finished_keys() == []
    assert len(list((tmp_path / "steps" / "t" / ".corrupt").iterdir())) == 1
