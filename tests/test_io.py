"""corel._io: lock files shared by processes."""

import fcntl
import os
import socket
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from corel import _io


@pytest.mark.parametrize("pause_after", [1, 2])
def test_a_stale_lock_is_taken_over_by_one_process_only(tmp_path, monkeypatch, pause_after):
    """Two processes restarted beside a killed one's lock both judged it stale; the second, checking
    just before the first took it over, then removed the first's new lock and claimed the unit too.
    The first pauses after its first staleness check (before the guard) or its second (under it)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "unit.lock"
    lock.write_text(f"{socket.gethostname()} {dead.pid}")
    first_checking, second_decided, first_decided = threading.Event(), threading.Event(), threading.Event()
    holds, calls = {}, []
    real = _io._lock_is_stale

    def slow_for_first(path):
        stale = real(path)
        if threading.current_thread().name == "first":
            calls.append(stale)
            if len(calls) == pause_after:  # the second runs meanwhile
                first_checking.set()
                second_decided.wait(timeout=1)
        return stale

    monkeypatch.setattr(_io, "_lock_is_stale", slow_for_first)

    def run(name, decided, other):
        with _io.claim(lock) as mine:
            holds[name] = mine
            decided.set()
            other.wait(timeout=2)  # holding it while the other decides

    threads = [threading.Thread(target=run, name="first", args=("first", first_decided, second_decided)),
               threading.Thread(target=run, name="second", args=("second", second_decided, first_decided))]
    threads[0].start()
    assert first_checking.wait(timeout=5)
    threads[1].start()
    for t in threads:
        t.join()
    assert sorted(holds.values()) == [False, True]
    assert not lock.exists()


def test_arrays_of_any_byte_order_or_read_only_are_stored(tmp_path):
    """A big-endian array (read from a FITS or .mat file) failed the save with torch's ValueError; a
    read-only one (np.load with mmap_mode, a broadcast view) made torch warn about undefined behaviour."""
    frozen = np.arange(3.0)
    frozen.flags.writeable = False
    payload = {"big": np.arange(4, dtype=">i4"), "frozen": frozen, "view": np.broadcast_to(np.float32(2), (2, 2))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _io.save_checked(payload, tmp_path / "f.pt", format="test", version=1)
    loaded = _io.load_checked(tmp_path / "f.pt", format="test", version=1, what="test file")
    assert torch.equal(loaded["big"], torch.arange(4, dtype=torch.int32))
    assert torch.equal(loaded["frozen"], torch.arange(3.0, dtype=torch.float64))
    assert torch.equal(loaded["view"], torch.full((2, 2), 2.0))


def test_a_stale_lock_is_taken_over_where_flock_fails(tmp_path, monkeypatch):
    def no_locks(*args):
        raise OSError(38, "Function not implemented")

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "unit.lock").write_text(f"{socket.gethostname()} {dead.pid}")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with _io.claim(tmp_path / "unit.lock") as mine:
        assert mine


def test_a_link_reported_failed_but_made_counts_as_created(tmp_path, monkeypatch):
    """NFS can answer a retransmitted link with EEXIST after the first one made it."""
    real = os.link

    def made_then_refused(src, dst):
        real(src, dst)
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(os, "link", made_then_refused)
    assert _io.create_exclusive(tmp_path / "lock", "a") and (tmp_path / "lock").read_text() == "a"
    assert not _io.create_exclusive(tmp_path / "lock", "b") and (tmp_path / "lock").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["lock"]


def test_a_takeover_in_progress_is_left_to_its_process(tmp_path):
    """Whoever holds <lock>.takeover decides; another process does not wait on it (a stopped holder
    would stall every other) but leaves the unit to it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "unit.lock"
    lock.write_text(f"{socket.gethostname()} {dead.pid}")
    with open(tmp_path / "unit.lock.takeover", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        with _io.claim(lock) as mine:
            assert not mine and lock.exists()
    with _io.claim(lock) as mine:
        assert mine


def test_numpy_scalars_have_the_digest_of_what_is_stored():
    """content_digest refused numpy scalars (np.str_ class names: an ImageData's digest raised), which
    plain_data stores as Python values; their digest is now that of those values."""
    names = tuple(np.array(["cat", "dog"]))
    assert _io.content_digest([names, np.float64(0.5), np.int64(3)]) == _io.content_digest([("cat", "dog"), 0.5, 3])
    with pytest.raises(TypeError, match="cannot checksum a longdouble"):
        _io.content_digest(np.longdouble(1))
