"""Bounded admission: a fixed number of requests compute at once, a fixed number wait, the rest are refused.

A request is admitted (or refused at once with :class:`Busy`) when it arrives, before its image is
uploaded; it reserves memory as its bytes arrive (a slow upload holds only what it has sent) and the
rest of what its image and mask take once the upload is complete; it then waits for one of
``max_active`` compute slots. There is never an unbounded backlog: admitted requests are at most
``max_active + max_queued`` and their buffers at most ``memory_budget`` bytes; one client address
(the peer without its port) may hold at most ``max_per_peer`` of them, and declare at most
``max_peer_bytes`` of uploads in them (beyond its first), so that one client cannot take every slot.
"""

from __future__ import annotations

import asyncio
import time

from samsem.errors import InputError


class Busy(Exception):
    """The server is full; ``retry_after_s`` is a hint for when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    """Counts admitted requests (computing + waiting) and reserved bytes; hands out compute slots.

    Must be used from one asyncio event loop.
    """

    def __init__(
        self,
        max_active: int,
        max_queued: int,
        memory_budget: int,
        max_per_peer: int | None = None,
        max_peer_bytes: int | None = None,
    ) -> None:
        if max_active < 1 or max_queued < 0 or memory_budget < 1:
            raise ValueError("need max_active >= 1, max_queued >= 0, memory_budget >= 1")
        self.max_active = max_active
        self.max_queued = max_queued
        self.memory_budget = memory_budget
        self.max_per_peer = max_active + max_queued if max_per_peer is None else max_per_peer
        self.max_peer_bytes = memory_budget // 2 if max_peer_bytes is None else max_peer_bytes
        self.per_peer: dict[str, int] = {}
        self.declared: dict[str, int] = {}  # upload bytes declared per client address
        self.admitted = 0
        self.active = 0
        self.reserved = 0
        self._slots = asyncio.Semaphore(max_active)
        self._mean_compute_s = 1.0  # running mean, for the retry hint

    @property
    def waiting(self) -> int:
        """Admitted requests that do not hold a compute slot."""
        return self.admitted - self.active

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: the queue ahead drained at the observed compute rate."""
        ahead = self.waiting + 1
        return float(min(30.0, max(0.1, self._mean_compute_s * ahead / self.max_active)))

    def fits(self, nbytes: int) -> None:
        """InputError when one request needing ``nbytes`` could never be served."""
        if nbytes > self.memory_budget:
            raise InputError(
                None,
                f"the image needs {nbytes} bytes of buffers, more than the server's "
                f"memory budget of {self.memory_budget} bytes",
            )

    def admit(self, nbytes: int = 0, peer: str = "", declared: int = 0) -> Slot:
        """Admit one request of client address ``peer`` reserving ``nbytes`` and declaring an upload of
        ``declared`` bytes, or raise :class:`Busy`."""
        if self.admitted >= self.max_active + self.max_queued:
            raise Busy(
                f"server busy: {self.active} requests computing and {self.waiting} queued "
                f"(limit {self.max_active} + {self.max_queued})",
                self.retry_after(),
            )
        if self.per_peer.get(peer, 0) >= self.max_per_peer:
            raise Busy(
                f"too many calls from this client: {self.per_peer[peer]} admitted "
                f"(limit {self.max_per_peer} per client address)",
                self.retry_after(),
            )
        ahead = self.declared.get(peer, 0)
        if ahead and ahead + declared > self.max_peer_bytes:
            raise Busy(
                f"too many upload bytes from this client: {ahead} declared in calls in progress, "
                f"{declared} more (limit {self.max_peer_bytes} per client address)",
                self.retry_after(),
            )
        slot = Slot(self, peer, declared)
        self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        if declared:
            self.declared[peer] = ahead + declared
        self.admitted += 1
        try:
            slot.reserve(nbytes)
        except Exception:
            slot.release()
            raise
        return slot

    def _finished(self, compute_s: float) -> None:
        self._mean_compute_s = 0.8 * self._mean_compute_s + 0.2 * compute_s


class Slot:
    """One admitted request: its reserved bytes and, after :meth:`start`, its compute slot.

    The slot is freed when every holder has called :meth:`release` (the call handler holds it from
    :meth:`Admission.admit`; a worker thread that may outlive a cancelled call takes a :meth:`hold`).
    """

    def __init__(self, owner: Admission, peer: str = "", declared: int = 0) -> None:
        self._owner = owner
        self.peer = peer
        self.declared = declared
        self.nbytes = 0
        self._computing_since: float | None = None
        self._holders = 1

    def reserve(self, nbytes: int) -> None:
        """Reserve ``nbytes`` more of the budget, or raise :class:`Busy` (InputError if it never fits)."""
        o = self._owner
        o.fits(self.nbytes + nbytes)
        if o.reserved + nbytes > o.memory_budget:
            raise Busy(
                f"server busy: {o.reserved} of {o.memory_budget} buffer bytes in use, {nbytes} more needed",
                o.retry_after(),
            )
        o.reserved += nbytes
        self.nbytes += nbytes

    async def start(self) -> float:
        """Wait for a compute slot; returns the seconds waited."""
        t0 = time.monotonic()
        await self._owner._slots.acquire()
        self._owner.active += 1
        self._computing_since = time.monotonic()
        return self._computing_since - t0

    def hold(self) -> None:
        """One more holder: the slot stays taken until this holder releases it too."""
        self._holders += 1

    def release(self) -> None:
        """Drop one hold; the last one gives back the compute slot, the reserved bytes and the admission."""
        self._holders -= 1
        if self._holders != 0:
            return
        o = self._owner
        if self._computing_since is not None:
            o._finished(time.monotonic() - self._computing_since)
            o.active -= 1
            o._slots.release()
        o.reserved -= self.nbytes
        o.admitted -= 1
        left = o.per_peer.pop(self.peer) - 1
        if left:
            o.per_peer[self.peer] = left
        if self.declared:
            rest = o.declared.pop(self.peer) - self.declared
            if rest:
                o.declared[self.peer] = rest
