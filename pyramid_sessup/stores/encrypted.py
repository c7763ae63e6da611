"""Encryption at rest (``sessup.session.encrypt = true``): a wrapper around any store.

:class:`EncryptedStore` encrypts and authenticates each session *key* on its
own, so the inner store's atomic per-key merge (Redis script or ``WATCH``,
PostgreSQL ``(data || changed) - removed``, the file lock, the memory mutex)
keeps working unchanged, and two requests writing different keys of one
session both persist.  The inner store holds, per session, a JSON object::

    <stored name> -> "<key id>.<base64url(nonce | AES-256-GCM ciphertext | tag)>"

* The *stored name* is the first 128 bits of HMAC-SHA256(name key, slot | ID |
  key name), base64url (22 characters).  The session ID is in it, so one key
  name gets a different stored name in every session: a dump does not even
  show which sessions share a key.
* The plaintext is the JSON ``[key, value]``; ``[key]`` is a *removal marker*
  (below).  The associated data is ``<session ID>.<stored name>``: a value
  copied to another session or another stored name does not decrypt.
* Three keys are derived from each secret of ``sessup.session.secret`` with
  HKDF-SHA256, one per purpose: the AES key, the name key, and a public key ID
  (8 characters) that says which secret a value was encrypted with.

Rotation.  Every key has two *slots* per secret: F (written by the
application) and R (re-encrypted by this module); slot F of the first secret
is "F0".  A write of a key sets its F0 and, in the same atomic merge, removes
every other name the key has under every configured secret.  When one key has
several entries, the first wins in the order F0, R0, F1, R1, ... (the index is
the secret's position).  A loaded record whose winning entry for a key lies
under an older secret is *re-encrypted*: in one merge, the value goes to R0
and the key's old-secret entries are removed.  This happens on the first load
(and on every write) that finds one, so after a rotation every session that
sees a request carries only the first secret's key ID, and dropping the old
secret later (after ``sessup.session.timeout``) loses only sessions that saw
no request meanwhile.

Why re-encryption never loses a concurrent write, while every process has the
same secret list: it writes only R0 and old-secret names.  The application's
writes go to F0, which outranks R0, so a write landing between our read and
the re-encryption still wins; and while more than one secret is configured, a
removed key is written as a marker in F0 rather than dropped, so a
re-encryption landing after a removal cannot bring the key back.  No process
with this secret list ever writes an old-secret name, so removing those
removes nothing anyone wrote since.  With one secret there is nothing to
re-encrypt, and removal is physical.

The race accepted: processes whose secret lists disagree (during the rolling
restart that changes the *first* secret) each see the other's entries as
old.  A write of a key by one can then be undone if it lands within one store
round trip of the other's re-encryption of the same key of the same session.
docs/deployment.md's rotation steps keep that window to the restart itself.

Entries that do not decrypt (tampered, copied from another session, written
without encryption, or under a secret not configured here) are left out of
the loaded data with one warning per load, never an error.  They stay in the
record (they may be a newer process's, under a secret this one does not know
yet): writing their key overwrites them, and they end with the record.

ID rotation (``sessup.session.rotate_after``).  The inner store's ``rotate``
copies the stored record to the new ID as it is, but every value here is
bound to the old ID (its stored name and associated data), so
:meth:`EncryptedStore.rotate` rewrites the whole record instead: it reads the
record, decrypts it, encrypts it afresh for the new ID (under the first secret
only, so a rotation also finishes any re-encryption), and asks the inner store
to rotate only if the record is still exactly what it read (``if_record``),
removing every old entry and adding the new ones in the same atomic step;
a concurrent write in between makes it read and try again, so no write is
lost and the new ID never holds a value bound to the old one (a record that
keeps changing through many tries keeps its ID until a later request).  Entries that
do not decrypt are not carried over.  Lookups pass the inner store's forwards
through, and ``delete`` reports the forward it took away.

Session IDs, expiry, tombstones, the number of keys and the sizes of values
are not hidden.  Locks, counters (upload quotas), ``ids``, ``count`` and
``purge_expired`` pass straight to the inner store.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import StoreUnavailable
from ..settings import SessupSettings
from .base import CounterFn, Forward, SessionStore, dumps, merge, valid_session_id

log = logging.getLogger("pyramid_sessup.stores")

_SALT = b"pyramid_sessup.session-store"
_NONCE = 12  # bytes: AES-GCM's standard nonce, random per value
_TAG = 16  # bytes
_NAME_BYTES = 16  # of the HMAC: a 22-character stored name
_WRITTEN, _REENCRYPTED = b"F", b"R"
#: Rotations retried because the record changed between the read and the move
#: (each retry means another request wrote this session meanwhile); past them the
#: rotation is given up for now, and the session keeps its ID until a later request.
_ROTATE_ATTEMPTS = 20


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret: str, purpose: bytes, length: int) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=b"pyramid_sessup.store." + purpose)
    return hkdf.derive(secret.encode("utf-8"))


class _Key:
    """What one secret derives: its key ID, name key and AES key."""

    __slots__ = ("id", "names", "aead")

    def __init__(self, secret: str) -> None:
        self.id = _b64(_derive(secret, b"key-id", 6))
        self.names = _derive(secret, b"names", 32)
        self.aead = AESGCM(_derive(secret, b"aes-256-gcm", 32))

    def name(self, slot: bytes, sid: str, key: str) -> str:
        # The ID has a fixed length, so slot | ID | key name is unambiguous.
        message = slot + sid.encode("ascii") + key.encode("utf-8", "surrogatepass")
        return _b64(hmac.digest(self.names, message, "sha256")[:_NAME_BYTES])


def _aad(sid: str, name: str) -> bytes:
    return f"{sid}.{name}".encode("ascii")


class EncryptedStore(SessionStore):
    """``inner``, with each session value encrypted under keys derived from ``secrets``
    (the first encrypts, all decrypt); see the module docstring."""

    #: The stored record is not what the session layer would serialize.
    compare_and_set = False

    def __init__(self, inner: SessionStore, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        super().__init__(timeout=inner.timeout)
        self.inner = inner
        self.name = inner.name
        self._keys = [_Key(secret) for secret in secrets]
        self._by_id: dict[str, list[tuple[int, _Key]]] = {}
        for index, key in enumerate(self._keys):
            # A 48-bit ID: two secrets sharing one is astronomically unlikely, and then both are tried.
            self._by_id.setdefault(key.id, []).append((index, key))
        # Removal markers are needed only while an older secret can still be read (re-encrypted).
        self._markers = len(self._keys) > 1

    @classmethod
    def from_settings(cls, values: SessupSettings) -> EncryptedStore:
        from . import make_inner_store

        return cls(make_inner_store(values), values.session.secret)

    @property
    def key_id(self) -> str:
        """The key ID of the values this store writes (the first secret's)."""
        return self._keys[0].id

    # -- sealing and opening one entry ---------------------------------------------
    def _seal(self, sid: str, name: str, plain: list[Any]) -> str:
        key = self._keys[0]
        nonce = os.urandom(_NONCE)
        body = json.dumps(plain, separators=(",", ":"), allow_nan=False).encode("utf-8")
        return f"{key.id}.{_b64(nonce + key.aead.encrypt(nonce, body, _aad(sid, name)))}"

    def _open(self, sid: str, name: str, token: Any) -> tuple[int, str, list[Any]] | None:
        """``(secret index, key, [value] or [])`` of one stored entry, or None if it does not decrypt."""
        if not isinstance(token, str) or not isinstance(name, str):
            return None
        key_id, dot, body = token.partition(".")
        candidates = self._by_id.get(key_id) if dot else None
        if not candidates:
            return None
        try:
            raw = _unb64(body)
            aad = _aad(sid, name)
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) < _NONCE + _TAG:
            return None
        for index, key in candidates:
            try:
                plain = json.loads(key.aead.decrypt(raw[:_NONCE], raw[_NONCE:], aad))
            except InvalidTag:
                continue
            if not (isinstance(plain, list) and 1 <= len(plain) <= 2 and isinstance(plain[0], str)):
                return None
            return index, plain[0], plain[1:]
        return None

    def _rank(self, sid: str, index: int, name: str, key: str) -> int:
        """The entry's place in F0, R0, F1, R1, ... (only needed when a key has several).

        The associated data already proves that whoever holds the secret stored it
        under ``name``; the name says which slot."""
        return 2 * index + (name != self._keys[index].name(_WRITTEN, sid, key))

    def _other_names(self, sid: str, key: str) -> list[str]:
        """Every name of ``key`` but its F0: what a write of it removes."""
        names = [self._keys[0].name(_REENCRYPTED, sid, key)]
        for extra in self._keys[1:]:
            names.append(extra.name(_WRITTEN, sid, key))
            names.append(extra.name(_REENCRYPTED, sid, key))
        return names

    # -- whole records --------------------------------------------------------------
    def _encode(self, sid: str, data: Mapping[str, Any]) -> dict[str, str]:
        first = self._keys[0]
        encoded = {}
        for key, value in data.items():
            name = first.name(_WRITTEN, sid, key)
            encoded[name] = self._seal(sid, name, [key, value])
        return encoded

    def _decode(self, sid: str, record: Mapping[str, Any],
                quiet: bool = False) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        """The session data of a stored record, and the merge (changed, removed)
        that re-encrypts what lies under an older secret (both empty if nothing does)."""
        winners: dict[str, tuple[int, str, list[Any]]] = {}  # key -> (secret index, stored name, rest)
        ranks: dict[str, int] = {}  # the winner's rank, for keys met more than once
        old_names: dict[str, list[str]] = {}
        dropped = 0
        for name, token in record.items():
            opened = self._open(sid, name, token)
            if opened is None:
                dropped += 1
                continue
            index, key, rest = opened
            if index:
                old_names.setdefault(key, []).append(name)
            best = winners.get(key)
            if best is None:
                winners[key] = (index, name, rest)
                continue
            # Rare (a re-encryption met a write, or an older secret's entry): rank the two.
            if key not in ranks:
                ranks[key] = self._rank(sid, best[0], best[1], key)
            rank = self._rank(sid, index, name, key)
            if rank < ranks[key]:
                winners[key], ranks[key] = (index, name, rest), rank
        if dropped and not quiet:
            log.warning("session %s…: %d stored value(s) do not decrypt (tampered, copied from another session, "
                        "written without encryption, or under a secret not configured here); left out",
                        sid[:8], dropped)
        changed: dict[str, str] = {}
        removed: list[str] = []
        for key, names in old_names.items():
            removed.extend(names)
            index, _, rest = winners[key]
            if index and rest:  # the value itself is old: keep it, under the first secret
                name = self._keys[0].name(_REENCRYPTED, sid, key)
                changed[name] = self._seal(sid, name, [key, rest[0]])
        data = {key: rest[0] for key, (_, _, rest) in winners.items() if rest}
        return data, changed, removed

    def _reencrypt(self, sid: str, changed: dict[str, str], removed: list[str]) -> None:
        if not (changed or removed):
            return
        try:
            self.inner.update(sid, changed, removed)
        except StoreUnavailable as exc:
            # The data was read; the next load or write tries again.
            log.debug("session %s…: re-encryption postponed (%s)", sid[:8], exc)

    # -- the contract -----------------------------------------------------------------
    def lookup(self, sid: str, *, touch: bool = True) -> dict[str, Any] | Forward | None:
        record = self.inner.lookup(sid, touch=touch)
        if not isinstance(record, dict):  # absent, dead, or a rotated ID's forward
            return record
        data, changed, removed = self._decode(sid, record)
        if touch:  # a look (sessup-sessions show) writes nothing
            self._reencrypt(sid, changed, removed)
        return data

    def create(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        return self.inner.create(sid, self._encode(sid, data))

    def update(self, sid: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               expected: str | None = None) -> dict[str, Any] | None:
        if not valid_session_id(sid):
            return None
        first = self._keys[0]
        entries = self._encode(sid, changed)
        gone: list[str] = []
        for key in changed:
            gone.extend(self._other_names(sid, key))
        for key in removed:
            if key in changed:
                continue
            name = first.name(_WRITTEN, sid, key)
            if self._markers:
                entries[name] = self._seal(sid, name, [key])
            else:
                gone.append(name)
            gone.extend(self._other_names(sid, key))
        merged = self.inner.update(sid, entries, [name for name in gone if name not in entries])
        if merged is None:
            return None
        data, fix_changed, fix_removed = self._decode(sid, merged, quiet=True)  # load() already warned
        self._reencrypt(sid, fix_changed, fix_removed)
        return data

    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        return self.inner.replace(sid, self._encode(sid, data))

    def move(self, old: str, new: str, data: Mapping[str, Any]) -> bool:
        if not (valid_session_id(old) and valid_session_id(new)):
            return False
        # Encrypted for the new ID: the associated data binds each value to its session.
        return self.inner.move(old, new, self._encode(new, data))

    def rotate(self, old: str, new: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               grace: float, expected: str | None = None, if_record: str | None = None) -> dict[str, Any] | None:
        if not (valid_session_id(old) and valid_session_id(new)) or old == new:
            return None
        removed = list(removed)
        previous: dict[str, Any] | None = None
        for _ in range(_ROTATE_ATTEMPTS):
            record = self.inner.lookup(old, touch=False)
            if not isinstance(record, dict) or record == previous:
                # Rotated by another request, deleted or expired meanwhile; or
                # unchanged since the last try (every write draws a new nonce),
                # so what failed was the new ID: taken.
                return None
            data, _, _ = self._decode(old, record, quiet=True)
            if if_record is not None and data != json.loads(if_record):
                return None
            merge(data, changed, removed)
            # Every entry bound to the old ID goes, every value comes back bound to the new one.
            if self.inner.rotate(old, new, self._encode(new, data), list(record), grace=grace,
                                 if_record=dumps(record)) is not None:
                return data
            previous = record
        log.info("session %s…: rotation postponed, its record kept changing", old[:8])
        return None

    def touch(self, sid: str) -> None:
        self.inner.touch(sid)

    def delete(self, sid: str) -> str | None:
        return self.inner.delete(sid)

    def acquire_lock(self, sid: str, timeout: float) -> Any:
        return self.inner.acquire_lock(sid, timeout)

    def release_lock(self, sid: str, token: Any) -> None:
        self.inner.release_lock(sid, token)

    def modify_counter(self, key: str, fn: CounterFn, ttl: float) -> Any:
        return self.inner.modify_counter(key, fn, ttl)

    # The user index holds session IDs under keyed hashes of user IDs: nothing to encrypt.
    @property
    def index_ttl(self) -> int:
        return self.inner.index_ttl

    def link_user(self, user_key: str, sid: str) -> None:
        self.inner.link_user(user_key, sid)

    def unlink_user(self, user_key: str, sid: str) -> None:
        self.inner.unlink_user(user_key, sid)

    def user_sessions(self, user_key: str) -> list[tuple[str, float]]:
        return self.inner.user_sessions(user_key)

    def ids(self) -> Iterator[str]:
        return self.inner.ids()

    def count(self) -> int:
        return self.inner.count()

    def purge_expired(self) -> int:
        return self.inner.purge_expired()

    def close(self) -> None:
        self.inner.close()
