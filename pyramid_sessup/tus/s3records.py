"""The state object of a resumable upload in a bucket (``P.tus/<id>.info``)
and the lease in it that lets one request at a time change the upload.

Every write but the first is conditional (``If-Match`` on the ETag the writer
last saw; the first is ``If-None-Match: *``), so two machines never both
believe they changed the same state: the second gets ``412`` and gives up.
That is what makes the lease a lock:

* a request *acquires* it by writing the state it read back with a
  ``lease`` (a random token and an end time) under ``If-Match``; a state with
  a lease that has not ended means another request is at work (409);
* the holder *renews* it (another conditional write) before each step that
  could clash with a successor (a part upload, the multipart completion),
  whenever less than :data:`RENEW_BELOW` seconds remain; a failed renewal
  means the lease was taken over: the holder stops at once;
* it *releases* it by writing the last state it recorded, without the lease.

A holder killed mid-request leaves its lease behind; it ends after
:data:`LEASE_SECONDS`, and the next request takes the upload over.  This
assumes the servers' clocks agree within a few seconds and that one request
to the service (its retries included) ends within :data:`RENEW_BELOW` seconds:
a part starts going up with at least that much of the lease left."""
from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..uploads.s3 import S3Storage, is_conflict, is_missing
from .state import Busy, Gone

log = logging.getLogger(__name__)

#: How long a lease lasts after it was taken or renewed (seconds).
LEASE_SECONDS = 120.0
#: A holder renews its lease before a step when less than this remains (seconds).
RENEW_BELOW = 90.0
#: Largest state object read back (it holds one line per part: 10,000 at most).
MAX_STATE_BYTES = 1024 * 1024


class LostLease(Exception):
    """Another request took the upload over: stop, record nothing."""


@dataclass
class Lease:
    """A lease this process holds: what it last wrote, and under which ETag."""

    token: str
    until: float
    etag: str
    #: The state as last recorded, without the lease (what a release writes back).
    saved: dict[str, Any]
    #: The upload was removed while held: nothing to release.
    removed: bool = False


class StateObjects:
    """Reading and conditionally writing the state objects under ``prefix``."""

    def __init__(self, storage: S3Storage, prefix: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.storage = storage
        self.prefix = prefix
        self.lease_seconds = lease_seconds

    def key(self, upload_id: str) -> str:
        return f"{self.prefix}{upload_id}.info"

    def read(self, upload_id: str) -> tuple[dict[str, Any], str] | None:
        """The state object as JSON and its ETag, or ``None`` (missing, unreadable)."""
        from botocore.exceptions import ClientError

        storage = self.storage
        try:
            answer = storage.call("GetObject", storage.client.get_object, Bucket=storage.bucket,
                                  Key=self.key(upload_id))
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        body = answer["Body"]
        try:
            raw = body.read(MAX_STATE_BYTES + 1)
        finally:
            body.close()
        try:
            data = json.loads(raw) if len(raw) <= MAX_STATE_BYTES else None
        except ValueError:
            data = None
        return (data, str(answer["ETag"])) if isinstance(data, dict) else None

    def write(self, upload_id: str, data: dict[str, Any], *, if_match: str | None = None,
              new: bool = False) -> str:
        """Write the state object (only if its ETag is still ``if_match``, or
        only if it does not exist when ``new``) and return its new ETag.
        Raises :class:`LostLease` when the condition fails and :class:`Gone`
        when ``if_match`` names an object that no longer exists."""
        from botocore.exceptions import ClientError

        storage = self.storage
        body = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
        params: dict[str, Any] = {"Bucket": storage.bucket, "Key": self.key(upload_id), "Body": body,
                                  "ContentType": "application/json"}
        if if_match is not None:
            params["IfMatch"] = if_match
        if new:
            params["IfNoneMatch"] = "*"
        try:
            answer = storage.call("PutObject", storage.client.put_object, **params)
        except ClientError as exc:
            if is_conflict(exc):
                raise LostLease() from None
            if is_missing(exc):
                raise Gone() from None
            raise
        return str(answer["ETag"])

    def delete(self, upload_id: str) -> None:
        storage = self.storage
        storage.call("DeleteObject", storage.client.delete_object, Bucket=storage.bucket, Key=self.key(upload_id))

    # -- the lease ---------------------------------------------------------------------------

    def acquire(self, upload_id: str) -> Lease:
        """Take the upload's lease; :class:`Busy` if another request holds
        one that has not ended, :class:`Gone` if the upload does not exist."""
        got = self.read(upload_id)
        if got is None:
            raise Gone()
        data, etag = got
        current = data.pop("lease", None)
        now = time.time()
        if isinstance(current, dict) and isinstance(current.get("until"), (int, float)) \
                and current["until"] > now:
            raise Busy()
        lease = Lease(token=secrets.token_urlsafe(12), until=now + self.lease_seconds, etag=etag, saved=data)
        try:
            lease.etag = self.write(upload_id, self._with_lease(data, lease), if_match=etag)
        except LostLease:
            raise Busy() from None  # another request came first
        return lease

    def record(self, upload_id: str, lease: Lease, data: dict[str, Any]) -> None:
        """Write ``data`` as the upload's state, keeping (and renewing) the lease."""
        lease.until = time.time() + self.lease_seconds
        lease.etag = self.write(upload_id, self._with_lease(data, lease), if_match=lease.etag)
        lease.saved = data

    def renew(self, upload_id: str, lease: Lease) -> None:
        """Renew the lease if less than :data:`RENEW_BELOW` seconds remain;
        :class:`LostLease` if it was taken over."""
        if lease.until - time.time() < min(RENEW_BELOW, self.lease_seconds * 0.75):
            self.record(upload_id, lease, lease.saved)

    def release(self, upload_id: str, lease: Lease) -> None:
        """Write the recorded state back without the lease (never raises: a
        lease that cannot be released simply ends)."""
        if lease.removed:
            return
        try:
            self.write(upload_id, lease.saved, if_match=lease.etag)
        except Gone:
            pass
        except LostLease:
            log.warning("resumable upload %s: the lease was taken over before it was released", upload_id)
        except Exception as exc:
            log.warning("resumable upload %s: could not release the lease (it ends by itself): %s", upload_id, exc)

    @staticmethod
    def _with_lease(data: dict[str, Any], lease: Lease) -> dict[str, Any]:
        return {**data, "lease": {"token": lease.token, "until": lease.until}}
