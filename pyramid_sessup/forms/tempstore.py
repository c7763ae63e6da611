"""A session-backed temp store for form uploads (deform's ``FileUploadTempStore`` idea).

deform's demo keeps uploads in a process-global dict that never forgets; this
store keeps only *metadata* in the session, as JSON under one key, and leaves
the bytes where the upload pipeline wrote them: a temporary file in the upload
directory's ``.tmp`` area.  So a kept file costs the session a few hundred
bytes, survives a restart of the server (with a persistent session store), and
is still covered by the storage's sweep of old temporary files.

Entries expire after ``sessup.upload.temp_max_age`` seconds; expired entries
and their files are removed whenever the store is used.  Uids come from
:mod:`secrets` and only ever index the session's own entries, so one visitor
cannot name another's files.
"""
from __future__ import annotations

import secrets
import time
from typing import Any, Iterator

from ..uploads.storage import Storage

SESSION_KEY = "sessup.form_uploads"


class SessionTempStore:
    """Kept uploads of the current session.

    ``session``
        The request's session (a dict API).
    ``storage``
        The :class:`~pyramid_sessup.uploads.storage.Storage` holding the bytes.
    ``max_age``
        Seconds an entry lives (``sessup.upload.temp_max_age``).
    ``max_entries``
        Most entries kept per session; the oldest go first.  Default: 100.
    """

    def __init__(self, session: Any, storage: Storage, max_age: float, max_entries: int = 100,
                 now: Any = time.time) -> None:
        self.session = session
        self.storage = storage
        self.max_age = max_age
        self.max_entries = max_entries
        self._now = now
        self._announced = False

    # The entries dict lives in the session and is changed in place, so that a
    # form with a thousand files costs the session one encoding of it (when the
    # response is saved), not one per file: assigning it anew on every change
    # made the form's cost quadratic in the number of files.  A session that
    # only sees assignments is told once through ISession.changed().
    def _entries(self) -> dict[str, dict[str, Any]]:
        """The entries as stored (read-only use)."""
        value = self.session.get(SESSION_KEY)
        return value if isinstance(value, dict) else {}

    def _writable(self) -> dict[str, dict[str, Any]]:
        """The entries, to change in place; the session knows they change."""
        value = self.session.get(SESSION_KEY)
        if not isinstance(value, dict):
            value = {}
            self.session[SESSION_KEY] = value
        if not self._announced:
            self._announced = True
            changed = getattr(self.session, "changed", None)  # ISession's; a plain dict has none
            if changed is not None and not getattr(self.session, "detects_nested_changes", False):
                changed()
        return value

    def _tidy(self, entries: dict[str, dict[str, Any]]) -> None:
        if not entries and SESSION_KEY in self.session:
            del self.session[SESSION_KEY]

    def _temp_path(self, entry: dict[str, Any]) -> str | None:
        temp_id = entry.get("temp_id")
        return self.storage.temp_path_for(temp_id) if isinstance(temp_id, str) else None

    def _discard_file(self, entry: dict[str, Any]) -> None:
        path = self._temp_path(entry)
        if path is not None:
            self.storage.discard(path)

    def purge_expired(self) -> int:
        """Remove expired entries (and their files); return how many."""
        cutoff = self._now() - self.max_age
        expired = [uid for uid, e in self._entries().items()
                   if not isinstance(e, dict) or not isinstance(e.get("created"), (int, float))
                   or e["created"] < cutoff]
        if expired:
            entries = self._writable()
            for uid in expired:
                entry = entries.pop(uid)
                if isinstance(entry, dict):
                    self._discard_file(entry)
            self._tidy(entries)
        return len(expired)

    def adopt(self, stored: Any) -> dict[str, Any]:
        """Keep a file just received by the pipeline (a ``StoredFile`` still in
        its temporary file); return its entry, with a new ``uid``."""
        entries = self._writable()
        uid = secrets.token_urlsafe(16)
        entry = {
            "uid": uid,
            "filename": stored.filename,
            "mimetype": stored.content_type,
            "size": stored.size,
            "sha256": stored.sha256,
            "temp_id": self.storage.temp_id(stored.temp_path),
            "created": self._now(),
        }
        entries[uid] = entry
        while len(entries) > self.max_entries:
            oldest = min(entries, key=lambda k: entries[k].get("created", 0))
            self._discard_file(entries.pop(oldest))
        return dict(entry)

    def get(self, uid: Any) -> dict[str, Any] | None:
        """The live entry ``uid`` (its file still there, not expired), or ``None``."""
        if not isinstance(uid, str):
            return None
        entry = self._entries().get(uid)
        if entry is None:
            return None
        if entry.get("created", 0) < self._now() - self.max_age or self._temp_path(entry) is None:
            self.remove(uid)
            return None
        return dict(entry)

    def temp_path(self, uid: str) -> str | None:
        """Path of the kept file ``uid``, or ``None``."""
        entry = self.get(uid)
        return self._temp_path(entry) if entry else None

    def pop(self, uid: str) -> dict[str, Any] | None:
        """Forget ``uid`` without removing its file (it is being stored for good)."""
        if uid not in self._entries():
            return None
        entries = self._writable()
        entry = entries.pop(uid)
        self._tidy(entries)
        return entry

    def remove(self, uid: str) -> None:
        """Forget ``uid`` and remove its file."""
        if uid not in self._entries():
            return
        entries = self._writable()
        self._discard_file(entries.pop(uid))
        self._tidy(entries)

    def clear(self) -> None:
        """Forget every entry and remove every kept file."""
        entries = self._entries()
        for entry in entries.values():
            self._discard_file(entry)
        if SESSION_KEY in self.session:
            del self.session[SESSION_KEY]

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and self.get(uid) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries()))

    def __len__(self) -> int:
        return len(self._entries())
