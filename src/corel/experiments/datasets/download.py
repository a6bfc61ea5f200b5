"""Official dataset archives: where they are looked for, and checked, atomic downloads that fail
within seconds when offline."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from tqdm.auto import tqdm

# Seconds to reach the download host (DNS + TCP) and, once connected, the longest silence tolerated.
_CONNECT_TIMEOUT = 5.0
_READ_TIMEOUT = 60.0



@dataclass(frozen=True)
class Archive:
    """An official archive: file name, URL, md5, and the folder it extracts to."""

    filename: str
    url: str
    md5: str
    folder: str


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": Archive("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                         "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
    "tinyimagenet": Archive("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                             "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200"),
}


def find_folder(root: Path, archive: Archive, marker: str) -> Path | None:
    """The extracted folder: ``root`` itself or ``root/<folder>``, recognised by the file ``marker``."""
    for folder in (root, root / archive.folder):
        if (folder / marker).is_file():
            return folder
    return None


def find_archive(root: Path, archive: Archive, dataset: str, download: bool, alternative: str = "") -> Path:
    """The archive ``root`` or ``root/<filename>``; downloaded there if missing and ``download``."""
    if root.is_file():
        return root
    if (root / archive.filename).is_file():
        return root / archive.filename
    where = (f"Put {archive.filename} (from {archive.url}, md5 {archive.md5}) or its extracted folder "
             f"{archive.folder}/ there{alternative}, or point to the folder holding them (--data-dir on the "
             "command line, data_dir= in Python).")
    if not download:
        raise ValueError(f"{dataset}: no data in {root} (download=False). {where}")
    try:
        return _download(archive, root)
    except (OSError, urllib.error.URLError, HTTPException) as e:
        raise ValueError(f"{dataset}: no data in {root} and downloading {archive.url} failed ({e}). {where}") from e


def _download(archive: Archive, root: Path) -> Path:
    """Downloads ``archive`` into ``root`` atomically: to a temporary file, md5-checked, then renamed."""
    _check_reachable(archive.url, _CONNECT_TIMEOUT)
    root.mkdir(parents=True, exist_ok=True)
    target = root / archive.filename
    fd, part = tempfile.mkstemp(dir=root, prefix=f".{archive.filename}.", suffix=".part")
    try:
        md5 = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(archive.url, timeout=_READ_TIMEOUT) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {archive.filename}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())  # durable before the rename, as every corel write (corel._io)
        if total is not None and received != total:
            raise ValueError(f"download of {archive.url} is truncated: {received} of {total} bytes; "
                             f"nothing was saved, retry or put a good copy at {target}")
        if md5.hexdigest() != archive.md5:
            raise ValueError(f"download of {archive.url} is corrupt: md5 {md5.hexdigest()}, expected "
                             f"{archive.md5}; nothing was saved, put a good copy at {target}")
        os.replace(part, target)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return target


def _check_reachable(url: str, timeout: float) -> None:
    """Raises OSError within about ``timeout`` seconds if the host of ``url`` (or the proxy for it)
    cannot be reached.  urllib alone can hang far longer offline: its timeout does not cover DNS."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    # A daemon thread, so that a hung DNS lookup can neither block us nor the interpreter's exit.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if not outcome:
        raise TimeoutError(f"no answer from {address[0]}:{address[1]} within {timeout:g} s (offline?)")
    if outcome[0] is not None:
        raise outcome[0]
