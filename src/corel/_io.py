"""Files, for every layer: atomic writes, safe loading and content checksums.

Every file corel writes goes through :func:`atomic_write`: a temporary file beside the target
(same filesystem), flushed and fsynced, then renamed over it, so a kill or a crash leaves either the
old file or the new one, never half of one.  Every file corel reads with torch goes through
:func:`safe_torch_load` (``weights_only=True``: a file can hold data, never code).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import secrets
import socket
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import torch


@contextlib.contextmanager
def _temporary_beside(path: Path, write: Callable[[BinaryIO], Any]) -> Iterator[Path]:
    """``write(file)`` into a new temporary file beside ``path`` (same filesystem), flushed and fsynced;
    yields its path and removes it afterwards unless it was renamed.  Permissions: those of any new
    file (0666 minus the umask), not a temporary file's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Makes a rename or link in ``folder`` durable; not every filesystem lets a folder be fsynced."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync, then rename it to ``path``."""
    path = Path(path)
    with _temporary_beside(path, write) as tmp:
        os.replace(tmp, path)
    _fsync_folder(path.parent)


def create_exclusive(path: str | os.PathLike, text: str) -> bool:
    """Creates ``path`` holding ``text`` (UTF-8) unless it exists; True when this call created it.

    Atomic as :func:`atomic_write` (the temporary file is hard-linked to ``path``): a process killed
    here leaves no empty or half-written ``path``, and of processes racing, exactly one creates it.
    """
    path = Path(path)
    with _temporary_beside(path, lambda f: f.write(text.encode())) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            # NFS may answer a retried link with EEXIST although the first one made it (open(2)'s advice:
            # trust the link count): else a lock this process created counted as another's, held for its life
            if os.stat(tmp).st_nlink != 2:
                return False
        except OSError:  # a filesystem without hard links: create, then write (a kill between leaves it empty)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode())
    _fsync_folder(path.parent)
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU.

    A missing file raises FileNotFoundError; a truncated, damaged or foreign one (including a pickle
    that asks for code) raises ValueError naming ``what`` and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{what} {path} is corrupt, truncated or not a corel file: it holds objects that are "
                         "not plain data (such as code to run), which corel never loads") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, AttributeError, TypeError, KeyError,
            IndexError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        first_line = first_line if len(first_line) <= 200 else first_line[:199] + "…"  # torch's can run long
        raise ValueError(f"{what} {path} is corrupt, truncated or not a corel file "
                         f"({type(e).__name__}: {first_line})") from e


def content_digest(obj: Any) -> str:
    """SHA-256 (hex) of a nested structure of dicts, lists, tuples, tensors, arrays and scalars.

    Independent of how the structure is stored (dict order, container format): the checksum that
    corel's files carry of their own content, verified on load.
    """
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=str):
                feed(str(key))
                feed(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        elif isinstance(value, torch.Tensor):
            feed(value.detach().cpu().numpy())
        elif isinstance(value, np.ndarray):
            digest.update(f"a{value.dtype.str}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        elif value is None or type(value) in (bool, int, float, str):  # not subclasses: they would not load
            digest.update(f"{type(value).__name__}:{value!r};".encode())
        elif isinstance(value, np.generic) and not isinstance(value.item(), np.generic):  # np.longdouble stays one
            feed(value.item())  # as plain_data stores it (an ImageData's class names from numpy: np.str_)
        else:
            raise TypeError(f"cannot checksum a {type(value).__name__}")

    feed(obj)
    return digest.hexdigest()


def plain_data(obj: Any) -> Any:
    """``obj`` as ``torch.load(weights_only=True)`` reads it back: numpy scalars as Python numbers,
    numpy arrays as tensors, dicts, lists and tuples rebuilt.  A payload holding numpy objects (a
    parameter np.float64(0.1) from a grid) was written, and then refused on load as not plain data."""
    if isinstance(obj, dict):
        return {plain_data(key): plain_data(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain_data(item) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):  # native-order, writable copy: torch refuses other orders, warns on read-only
        return torch.from_numpy(np.array(obj, dtype=obj.dtype.newbyteorder("="), order="C", copy=True))
    return obj


def save_checked(payload: dict, path: str | os.PathLike, *, format: str, version: int) -> None:
    """Writes ``payload`` (as :func:`plain_data`) under a header (format name, version, checksum of
    the payload), atomically; TypeError before writing for content a corel file cannot hold."""
    payload = plain_data(payload)
    atomic_torch_save({"format": format, "version": version, "checksum": content_digest(payload),
                       "payload": payload}, path)


# corel's file formats, for telling a user which one a file of the wrong kind is
_FORMATS = {
    "corel-model": "the model file of `corel fit` (in Python: corel.NoveltyModel.load; its .detector is the "
                   "OneClassDetector)",
    "corel-one-class-detector": "a detector saved by OneClassDetector.save (in Python: OneClassDetector.load)",
    "corel-backbone": "a backbone file (`corel train`'s backbone.pt; --backbone takes it)",
}


def load_checked(path: str | os.PathLike, *, format: str, version: int, what: str, older: str = "") -> dict:
    """The payload of a file written by :func:`save_checked`, after checking its format, version
    and checksum; a file of another format, another version or changed content raises ValueError
    (``older``: what to do with a file of an earlier version, added to that message)."""
    blob = safe_torch_load(path, what)
    if not isinstance(blob, dict) or blob.get("format") != format:
        found = _FORMATS.get(blob.get("format")) if isinstance(blob, dict) else None
        raise ValueError(f"{path} is not a {what} (expected format {format!r})" + (f"; it is {found}" if found else ""))
    stored = blob.get("version")
    if stored != version:
        advice = older if isinstance(stored, int) and stored < version and older else \
            "recreate it with this version of corel"
        raise ValueError(f"{path} is a {what} of format version {stored}; this corel reads version {version} "
                         f"only: {advice}")
    payload = blob.get("payload")
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: the {what} has no payload")
    try:
        actual = content_digest(payload)
    except TypeError as e:
        raise ValueError(f"{path}: the {what} holds unexpected content ({e})") from e
    if actual != blob.get("checksum"):
        raise ValueError(f"{path}: the {what} is damaged: its content does not match its checksum")
    return payload


def _lock_is_stale(path: Path) -> bool:
    """A lock left by a process of this host that no longer runs (killed before it could remove it)."""
    try:
        host, pid = path.read_text().split()
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):  # unreadable, foreign or not ours to signal: treat as held
        return False
    return False


@contextlib.contextmanager
def claim(path: str | os.PathLike) -> Iterator[bool]:
    """Claims a unit of work shared by several processes through the lock file ``path``.

    Yields True when this process holds the lock (it is removed on exit), False when another
    live process of this host (or any process of another host) holds it.  A lock whose process on
    this host is gone is taken over.
    """
    path = Path(path)
    for _ in range(2):
        if create_exclusive(path, f"{socket.gethostname()} {os.getpid()}"):  # never seen empty, so never stuck
            try:
                yield True
            finally:
                path.unlink(missing_ok=True)
            return
        if not _remove_if_stale(path):
            yield False
            return
    yield False


def _remove_if_stale(path: Path) -> bool:
    """Removes the lock ``path`` if it is stale; True when it did.  The check and the removal hold
    ``<path>.takeover`` (flock, released by the kernel when a process dies, so never stale itself):
    without it, of processes restarted together beside a killed one's lock, one took it over and
    created its own, and another, judging the old one stale just before, removed that new lock and
    took it too.  Only this host's processes take a lock over, so a host-local lock suffices."""
    if not _lock_is_stale(path):  # the common case, a live lock: no guard file created
        return False
    with open(path.with_name(path.name + ".takeover"), "a") as guard:  # kept: removed, two could lock two files
        try:  # not waiting: a process stopped while holding it would stall every other
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is deciding; if the lock was stale, the unit is now its
            return False
        except OSError:  # a filesystem without locks (some FUSE mounts): unguarded rather than never taken over
            pass
        if not _lock_is_stale(path):  # again, now alone: another may have taken it over since
            return False
        path.unlink(missing_ok=True)
        return True
