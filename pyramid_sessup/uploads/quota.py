"""Upload quotas: files and bytes per visitor over a rolling window.

``sessup.upload.quota_files`` and ``quota_bytes`` bound what one visitor may
store per ``sessup.upload.quota_window`` seconds.  Every stored upload is
charged when it is committed (``/upFile``, the form) or, for tus, when it is
created (its ``Upload-Length``; a creation that never finishes still counts,
so creating uploads cannot be used to fill the disk).  Empty files count as a
file.  Over the quota the request is refused with 429, ``Retry-After`` (when
enough of the window has passed) and a message naming the setting; nothing is
stored.

**Who is a visitor.**  :func:`visitor_keys` (replaceable with
``sessup.upload.quota_key``) returns the keys an upload counts against: the
session when the request has a stored one and the CSRF visitor nonce, otherwise the client address
(``REMOTE_ADDR``; behind a proxy, waitress's ``trusted_proxy`` settings make it
the real client).  It never creates a session.  An application that binds
users returns ``["user:<id>", *visitor_keys(request)]``, and an upload must
then fit under every key's quota.  Sessions and visitor cookies cost a client
nothing to renew, so a visitor who is not signed in (no session bound with
``sign_in``) is also charged to its address, under a quota
``sessup.upload.quota_address_factor`` times larger: many identities from one
address still share one bound.

**Counting.**  Counters live in the session store, in a namespace of their own
(:meth:`~pyramid_sessup.stores.base.SessionStore.modify_counter`), so every
process sharing the store shares them and a charge is atomic: of two
processes racing for the last file, exactly one wins.  A counter holds up to
:data:`SLICES` slices of the window; a slice stops counting once the window
has passed its end, so the window rolls with a granularity of 1/60.  The
counter keys are hashes: the store never holds the session ID or address in
clear under them.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyramid.request import Request

from ..csrf import visitor_nonce
from ..exceptions import QuotaExceeded, UploadTooLarge

#: Slices of the window each counter keeps.
SLICES = 60

#: The key prefix of an address's total over every anonymous visitor from it.
ADDRESS_TOTAL = "address-total:"


@dataclass(frozen=True)
class Quota:
    """The quota settings; ``None`` means no limit."""

    max_files: int | None
    max_bytes: int | None
    window: int

    @property
    def active(self) -> bool:
        return self.max_files is not None or self.max_bytes is not None

    @property
    def slice(self) -> float:
        return self.window / SLICES


@dataclass(frozen=True)
class Verdict:
    """What one counter said about a charge."""

    ok: bool
    #: The slice charged (when ``ok``), for a refund.
    slot: int | None = None
    #: When refused: the setting over its limit, and seconds until the charge fits (``None``: never).
    limit: str = ""
    retry_after: float | None = None
    used_files: int = 0
    used_bytes: int = 0


def _live_slots(data: dict[str, Any] | None, quota: Quota, now: float) -> dict[int, list[int]]:
    if not isinstance(data, dict) or data.get("w") != quota.window or not isinstance(data.get("s"), dict):
        return {}  # absent, or counted under another window: start afresh
    current = int(now // quota.slice)
    slots: dict[int, list[int]] = {}
    for key, value in data["s"].items():
        try:
            slot = int(key)
            files, size = int(value[0]), int(value[1])
        except (TypeError, ValueError, IndexError):
            continue
        if slot > current - SLICES:
            slots[slot] = [files, size]
    return slots


def _encode(slots: dict[int, list[int]], quota: Quota) -> dict[str, Any]:
    return {"w": quota.window, "s": {str(k): v for k, v in slots.items()}}


def charge_fn(quota: Quota, files: int, size: int, now: float, *, commit: bool = True
              ) -> Callable[[dict[str, Any] | None], tuple[dict[str, Any] | None, Verdict]]:
    """The counter function that adds ``files``/``size`` if they fit (with
    ``commit=False``, only says whether they would)."""

    def fn(data: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Verdict]:
        slots = _live_slots(data, quota, now)
        used_files = sum(v[0] for v in slots.values())
        used_bytes = sum(v[1] for v in slots.values())
        over = []
        if quota.max_files is not None and used_files + files > quota.max_files:
            over.append(("quota_files", quota.max_files, files, 0))
        if quota.max_bytes is not None and used_bytes + size > quota.max_bytes:
            over.append(("quota_bytes", quota.max_bytes, size, 1))
        if over:
            wait = _wait(slots, quota, now, [(limit, need, index) for _, limit, need, index in over])
            return None, Verdict(False, limit=over[0][0], retry_after=wait, used_files=used_files,
                                 used_bytes=used_bytes)
        slot = int(now // quota.slice)
        if not commit:
            return None, Verdict(True, slot=slot, used_files=used_files, used_bytes=used_bytes)
        entry = slots.setdefault(slot, [0, 0])
        entry[0] += files
        entry[1] += size
        return _encode(slots, quota), Verdict(True, slot=slot, used_files=used_files + files,
                                              used_bytes=used_bytes + size)

    return fn


def _wait(slots: dict[int, list[int]], quota: Quota, now: float,
          over: list[tuple[int, int, int]]) -> float | None:
    """Seconds until, as slices leave the window, each ``(limit, need, index)``
    fits; ``None`` if one never can (``need`` alone is over ``limit``)."""
    if any(need > limit for limit, need, _ in over):
        return None
    used = [sum(v[0] for v in slots.values()), sum(v[1] for v in slots.values())]
    for slot in sorted(slots):
        used[0] -= slots[slot][0]
        used[1] -= slots[slot][1]
        if all(used[index] + need <= limit for limit, need, index in over):
            return max(0.0, (slot + SLICES) * quota.slice - now)
    return float(quota.window)  # unreachable unless the counter changed under us


def refund_fn(quota: Quota, files: int, size: int, slot: int, now: float
              ) -> Callable[[dict[str, Any] | None], tuple[dict[str, Any] | None, None]]:
    """The counter function that takes back a charge made in ``slot``."""

    def fn(data: dict[str, Any] | None) -> tuple[dict[str, Any] | None, None]:
        slots = _live_slots(data, quota, now)
        entry = slots.get(slot)
        if entry is None:
            return None, None  # that slice already left the window
        entry[0] = max(0, entry[0] - files)
        entry[1] = max(0, entry[1] - size)
        return _encode(slots, quota), None

    return fn


def visitor_keys(request: Request) -> list[str]:
    """Who an upload counts against: ``session:<id>`` when the request has a
    stored session, and ``visitor:<CSRF visitor nonce>`` when the browser has
    one (pages and ``GET /csrf`` set it); with neither, ``address:<REMOTE_ADDR>``.
    Both keys, not the first: a visitor whose first upload starts its session
    (the demo form keeps its result there) stays under the quota it used so far.

    Replace it with ``sessup.upload.quota_key`` (a dotted name of a function
    of the request returning a list of keys), for example to add a user
    binding.  It must not create a session: this one reads ``request.session``
    only when the session cookie is present, and never creates a nonce.
    """
    values = request.registry.sessup_settings
    keys: list[str] = []
    if request.cookies.get(values.session.name):
        session = request.session
        sid = getattr(session, "id", None)
        if not session.new and isinstance(sid, str) and sid:
            keys.append("session:" + sid)
    nonce = visitor_nonce(request)
    if nonce:
        keys.append("visitor:" + nonce)
    return keys or ["address:" + (request.remote_addr or "unknown")]


def counter_key(key: str) -> str:
    """The store's counter key for a visitor key (a hash: nothing in clear)."""
    return hashlib.sha256(("sessup.upload.quota\0" + key).encode("utf-8")).hexdigest()


def quota_of(request: Request) -> Quota:
    values = request.registry.sessup_settings
    return Quota(values.upload.quota_files, values.upload.quota_bytes, values.upload.quota_window)


def _keys(request: Request, quota: Quota) -> list[tuple[str, Quota]]:
    """The keys an upload counts against, each with its quota: the visitor's
    (:func:`visitor_keys` or ``quota_key``), and, for a visitor not signed in,
    the client address's, ``quota_address_factor`` times larger."""
    upload = request.registry.sessup_settings.upload
    fn = upload.quota_key or visitor_keys
    keys = [(key, quota) for key in dict.fromkeys(fn(request))]
    factor = upload.quota_address_factor
    if factor and not _signed_in(request):
        scaled = Quota(None if quota.max_files is None else quota.max_files * factor,
                       None if quota.max_bytes is None else quota.max_bytes * factor, quota.window)
        keys.append((ADDRESS_TOTAL + (request.remote_addr or "unknown"), scaled))
    return keys


def _signed_in(request: Request) -> bool:
    """Whether the request's stored session is bound to a user (never creates a session)."""
    if not request.cookies.get(request.registry.sessup_settings.session.name):
        return False
    return getattr(request.session, "user_id", None) is not None


def _refused(quota: Quota, verdict: Verdict, files: int, size: int, key: str = "") -> Exception:
    scaled, whose = ("x quota_address_factor", " from this address") if key.startswith(ADDRESS_TOTAL) else ("", "")
    if verdict.limit == "quota_files":
        what = f"sessup.upload.quota_files{scaled} ({quota.max_files} files per {quota.window} s{whose})"
        used = f"{verdict.used_files} used"
    else:
        what = f"sessup.upload.quota_bytes{scaled} ({quota.max_bytes} bytes per {quota.window} s{whose})"
        used = f"{verdict.used_bytes} bytes used"
    if verdict.retry_after is None:
        # Can never fit: waiting would not help, so not 429.
        return UploadTooLarge(f"This upload ({files} files, {size} bytes) alone is over {what}; "
                              f"nothing was stored")
    return QuotaExceeded(f"Upload quota used up: {what}, {used}; nothing was stored",
                         retry_after=math.ceil(verdict.retry_after))


@dataclass
class Charge:
    """A charge made by :func:`charge`; :meth:`refund` takes it back (when the
    files could not be stored after all)."""

    store: Any
    quota: Quota
    files: int
    size: int
    slots: list[tuple[str, int]] = field(default_factory=list)

    def refund(self) -> None:
        now = time.time()
        slots, self.slots = self.slots, []
        for key, slot in slots:
            self.store.modify_counter(key, refund_fn(self.quota, self.files, self.size, slot, now),
                                      self.quota.window + self.quota.slice)


def charge(request: Request, files: int, size: int) -> Charge | None:
    """Count ``files`` files of ``size`` bytes in total against every key of
    the request; raise :class:`QuotaExceeded` (429, nothing charged) when one
    is over its quota.  ``None`` when no quota is configured."""
    quota = quota_of(request)
    if not quota.active:
        return None
    store = request.registry.sessup_store
    done = Charge(store, quota, files, size)
    now = time.time()
    try:
        for key, limits in _keys(request, quota):
            ckey = counter_key(key)
            verdict: Verdict = store.modify_counter(ckey, charge_fn(limits, files, size, now),
                                                    quota.window + quota.slice)
            if not verdict.ok:
                raise _refused(limits, verdict, files, size, key)
            done.slots.append((ckey, verdict.slot))  # type: ignore[arg-type]
    except BaseException:
        done.refund()
        raise
    return done


def precheck(request: Request) -> None:
    """Refuse at once (before a body is read) a visitor whose quota cannot
    take even one more empty file; changes nothing."""
    quota = quota_of(request)
    if not quota.active:
        return
    store = request.registry.sessup_store
    now = time.time()
    for key, limits in _keys(request, quota):
        verdict: Verdict = store.modify_counter(counter_key(key), charge_fn(limits, 1, 0, now, commit=False),
                                                quota.window + quota.slice)
        if not verdict.ok:
            raise _refused(limits, verdict, 1, 0, key)
