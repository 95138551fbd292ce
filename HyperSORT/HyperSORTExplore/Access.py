"""Who may connect to the explorer and which files it may touch.

* It listens on the loopback interface unless ``--host`` names another address; then a client
  needs an access token (generated and printed once, or given with ``--token``), checked by wslink
  when the page's websocket connects (the URL carries it as ``?secret=TOKEN``).
* It reads only files below the folders it was started with (the run, the scan's folder, the
  dataset, any ``--allow`` folder), after resolving symbolic links and ``..``.
* It writes only next to a scan the user opened, and never over an existing file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Iterable, Sequence

from HyperSORTModule.Errors import HyperSORTError

#: Hosts that reach only this machine.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def isLoopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) resolves to loopback addresses only."""
    host = str(host).strip().strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def accessToken(host: str, token: str | None) -> tuple[str | None, bool]:
    """The token clients must present: ``(token, generated)``.

    On loopback no token is needed unless one is given; on any other address a given token is used
    (at least 16 characters) or a new one is generated (to be printed once)."""
    if token is not None:
        if len(token) < 16 or not re.fullmatch(r"[A-Za-z0-9_\-.~]+", token):
            raise ValueError("--token must be at least 16 characters among letters, digits and -_.~ "
                             f"(it goes into the page's URL); found {len(token)} characters.")
        return token, False
    if isLoopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


class AccessPolicy:
    """The folders the explorer may read below (resolved once, at start).

    Args:
        readRoots: folders (or files, meaning their folder) the user started the server with.
    """

    def __init__(self, readRoots: Iterable[str | os.PathLike]) -> None:
        roots = []
        for root in readRoots:
            path = Path(root).expanduser().resolve()
            roots.append(path if path.is_dir() else path.parent)
        self.readRoots: tuple[Path, ...] = tuple(dict.fromkeys(roots))

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.readRoots) or "(none)"

    def checkRead(self, path: str | os.PathLike, what: str = "file") -> Path:
        """The resolved ``path`` if it lies below a read root; a readable error otherwise."""
        text = str(path).strip()
        if not text:
            raise HyperSORTError(f"Enter the path of a {what} on the server.")
        resolved = Path(text).expanduser().resolve()
        if not any(resolved == root or root in resolved.parents for root in self.readRoots):
            raise HyperSORTError(f"{resolved} is outside the folders this server may read ({self.describe()}). "
                                 "Restart 'hypersort explore' with --allow FOLDER to open files there.")
        if not resolved.is_file():
            raise HyperSORTError(f"The {what} {resolved} does not exist (or is not a file).")
        return resolved


def scanStem(scan: Path) -> str:
    name = scan.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return scan.stem


def safeName(text: str) -> str:
    """``"style 0 (main mode)"`` -> ``"style-0-main-mode"``: a file-name part."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", str(text)).strip("-")[:60] or "point"


def reserveOutputs(scan: Path, pointLabel: str, suffixes: Sequence[str]) -> list[Path]:
    """Create empty placeholder files beside ``scan`` for one accepted segmentation, one per suffix.

    Names are ``<scan>_hypersort_<point>[_N]<suffix>``, with the first ``N`` for which none of the
    files exists; each is created with ``O_EXCL``, so an existing file (even one made meanwhile by
    someone else) is never opened, let alone replaced. The caller replaces the placeholders
    atomically and removes them on failure."""
    base = f"{scanStem(scan)}_hypersort_{safeName(pointLabel)}"
    for attempt in range(1, 1000):
        stem = base if attempt == 1 else f"{base}_{attempt}"
        paths = [scan.with_name(stem + suffix) for suffix in suffixes]
        if any(p.exists() for p in paths):
            continue
        made: list[Path] = []
        try:
            for p in paths:
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                made.append(p)
            return paths
        except FileExistsError:
            for p in made:
                p.unlink(missing_ok=True)
        except OSError as error:
            for p in made:
                p.unlink(missing_ok=True)
            raise HyperSORTError(f"Cannot write next to the scan in {scan.parent}: {error.strerror}.") from error
    raise HyperSORTError(f"Too many accepted segmentations named {base}* in {scan.parent}.")
