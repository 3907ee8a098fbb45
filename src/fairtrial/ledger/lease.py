"""Who holds a running trial, and for how long: owner ids, leases and their heartbeat.

A run that claims a trial writes its owner id and a heartbeat time on the ledger's own clock
(so hosts whose clocks disagree still agree on expiry), and renews the heartbeat of every
trial it holds while it runs. Another run re-claims a ``running`` trial only when

- its lease expired: no heartbeat for :func:`lease_seconds` (the holder died, hung, or lost
  the ledger; on another host nothing else can be known), or
- its owner is provably dead: a process of this very machine and PID namespace that no longer
  exists, or whose PID now belongs to a process started at another time (PID reuse).

An owner id is ``host:pid:start:domain``: ``start`` is the process start time in clock ticks
since boot, ``domain`` a short hash of the kernel boot id and the PID namespace. Two processes
only compare PIDs when their domains match; containers sharing a hostname never do.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import threading
from functools import cache
from typing import TYPE_CHECKING, Any

from fairtrial.errors import LedgerError

if TYPE_CHECKING:
    from fairtrial.ledger.store import Ledger

#: seconds without a heartbeat after which a running trial may be taken over
DEFAULT_LEASE = 90.0
LEASE_ENV = "FAIRTRIAL_LEASE"


def lease_seconds() -> float:
    """The lease length: ``FAIRTRIAL_LEASE`` seconds, else :data:`DEFAULT_LEASE`."""
    raw = os.environ.get(LEASE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_LEASE
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.5 <= value <= 86400):
        raise LedgerError(
            f"{LEASE_ENV}={raw!r}: a lease is a number of seconds from 0.5 to 86400 "
            f"(default {DEFAULT_LEASE:g})"
        )
    return value


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time (clock ticks since boot, ``/proc/PID/stat`` field 22), or ''."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


@cache
def _domain() -> str:
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    if not boot or not pidns:
        return ""  # no way to tell this machine's processes apart from another's
    return hashlib.sha256(f"{boot}/{pidns}".encode()).hexdigest()[:12]


def owner_id() -> str:
    """This process's owner id (``host:pid:start:domain``); new after a fork."""
    pid = os.getpid()
    host = platform.node().replace(":", "_") or "unknown-host"
    return f"{host}:{pid}:{_start_ticks(pid)}:{_domain()}"


def describe(owner: str | None) -> str:
    """``host pid N`` for messages."""
    if not owner:
        return "an unknown run"
    parts = owner.split(":")
    if len(parts) >= 2 and parts[1].isdigit():
        return f"{parts[0]} pid {parts[1]}"
    return owner


def provably_dead(owner: str | None) -> bool:
    """True when ``owner`` was a process of this machine (same boot, same PID namespace)
    that is gone: its PID is free, or taken by a process started at another time. False
    whenever that cannot be known; the lease decides then."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) < 4:
        return False  # an owner id from before leases: only its lease (none) tells
    pid_text, start, domain = parts[-3], parts[-2], parts[-1]
    if not domain or domain != _domain() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        pass
    now = _start_ticks(pid)
    return bool(start and now and now != start)


class Heartbeat:
    """A daemon thread renewing the leases of every trial ``owner`` holds on ``ledger``.

    It renews every sixth of the lease, so a few missed beats (a slow ledger, a busy
    machine) never let the lease expire under a live run. A beat that fails (the ledger is
    briefly unreachable) is tried again on the next one.
    """

    def __init__(self, ledger: Ledger, owner: str, lease: float) -> None:
        self.ledger = ledger
        self.owner = owner
        self.interval = max(0.1, lease / 6)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fairtrial-heartbeat", daemon=True)
        self.beats = 0
        self.failures = 0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.ledger.renew(self.owner)
                self.beats += 1
            except Exception:  # the next beat tries again; the lease has slack for it
                self.failures += 1
