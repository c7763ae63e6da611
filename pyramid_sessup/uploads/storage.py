"""Where uploaded files live: the storage interface and the upload directory.

:class:`Storage` is what the upload pipeline, the forms, downloads and the
sweep use; :class:`LocalStorage` (a directory) and
:class:`~pyramid_sessup.uploads.s3.S3Storage` (a bucket of an S3-compatible
service) implement it, and :func:`upload_storage` builds the one that
``sessup.upload.storage`` names.  Every implementation keeps the same promises:

* a file being received is *temporary* (:meth:`Storage.open_temp`), never
  served, and gone after :meth:`Storage.discard` or a sweep;
* :meth:`Storage.finalize` makes it visible under a fresh random name, with its
  metadata, all at once;
* look-ups by name accept only generated names (:data:`NAME_PATTERN`).

Layout of the local ``root``::

    <root>/<name>              stored files; <name> = 32 random URL-safe characters [+ "." + ext]
    <root>/.tmp/<id>.part      files being received (created O_EXCL|O_NOFOLLOW, mode 0600)
    <root>/.meta/<name>.json   metadata of each stored file (original name, type, size, sha256)

Nothing here ever builds a path from client input: stored names and
temporary ids come from :mod:`secrets` and every look-up by name goes through
a strict pattern, so nothing can be read or written outside ``root``.

The working folders (``.tmp``, ``.meta``, and tus's ``.tus``) may vanish
while the server runs (a cleanup job removing empty folders): they are
recreated when next needed (:func:`open_working_dir`), with ``mkdir``, which
never follows a symlink, and opened with ``O_NOFOLLOW``, so a symlink planted
in their place is refused, never followed.  The upload directory itself is
not recreated: if it is gone (removed, or its volume unmounted), writing
elsewhere would be wrong, so uploads answer 507 and the log says why.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import secrets
import stat
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Protocol, TypeVar

from pyramid.exceptions import ConfigurationError

from ..exceptions import InsufficientStorage

if TYPE_CHECKING:
    from ..settings import SessupSettings

log = logging.getLogger("pyramid_sessup.uploads")

#: Stored names: 32 characters of ``secrets.token_urlsafe(24)`` (192 bits)
#: plus an optional lower-case extension.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}(?:\.[a-z0-9]{1,10})?")
#: Temporary file names inside ``.tmp``.
TEMP_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}\.part")
#: Ids of temporary files (what :meth:`Storage.temp_id` returns).
TEMP_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
#: Extensions :meth:`Storage.finalize` accepts.
EXT_PATTERN = re.compile(r"[a-z0-9]{1,10}")

TMP_DIR = ".tmp"
META_DIR = ".meta"

_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_BLOCK_SIZE = 256 * 1024  # 256 KiB per read of a download
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


#: OS errors that mean "the upload directory cannot take this file", with the
#: message a client gets (507 Insufficient Storage).  Anything else is a bug.
_STORAGE_ERRORS = {
    errno.ENOSPC: "The upload directory is full",
    errno.EDQUOT: "The upload directory is over its quota",
    errno.EROFS: "The upload directory is read-only; nothing was stored",
    errno.EACCES: "The upload directory is not writable; nothing was stored",
    errno.EPERM: "The upload directory is not writable; nothing was stored",
    errno.EIO: "The upload directory could not be written (I/O error); nothing was stored",
}


def storage_error_message(exc: BaseException) -> str | None:
    """The client-facing message for an ``OSError`` that the upload directory
    raised (full, read-only, not writable), or ``None`` for any other error."""
    if isinstance(exc, OSError):
        return _STORAGE_ERRORS.get(exc.errno)  # type: ignore[arg-type]
    return None


def _token() -> str:
    return secrets.token_urlsafe(24)


def open_working_dir(path: str) -> int:
    """A descriptor of the working folder ``path`` (a direct child of the
    upload directory), recreated (mode 0700) if it was removed.

    Never follows a symlink: a symlink or a file in its place is refused.
    Raises :class:`InsufficientStorage` (507, with one log line naming the
    path) when the folder cannot be had, the upload directory being gone in
    particular.
    """
    # Bounded, but generous: a cleanup job may remove the fresh, still empty
    # folder again between our mkdir and our open.
    for _ in range(100):
        try:
            return os.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                log.error("upload refused: %s is not a directory (a symlink or a file); it is never "
                          "followed: remove it and it is recreated", path)
                raise InsufficientStorage("The upload directory is not usable; nothing was stored") from None
            raise
        try:
            os.mkdir(path, 0o700)
            log.warning("recreated the upload working folder %s, which had been removed", path)
        except FileExistsError:
            pass  # another thread or process recreated it first
        except FileNotFoundError:
            log.error("upload refused: the upload directory %s is missing (removed, or its volume "
                      "not mounted); it is not recreated", os.path.dirname(path))
            raise InsufficientStorage("The upload directory is missing; nothing was stored") from None
    raise InsufficientStorage("The upload directory is not usable; nothing was stored")


@contextmanager
def working_dir(path: str) -> Iterator[int]:
    """:func:`open_working_dir` as a context manager that closes the descriptor."""
    fd = open_working_dir(path)
    try:
        yield fd
    finally:
        os.close(fd)


T = TypeVar("T")


def in_working_dir(path: str, action: Callable[[int], T], attempts: int = 100) -> T:
    """``action(dir_fd)`` in the working folder ``path`` (see
    :func:`open_working_dir`), which creates something in it.  An empty folder
    can be removed between our open and our create (which then fails with
    ``ENOENT`` in the dead directory): open it again and retry.  As bounded
    and as generous as :func:`open_working_dir`: a cleanup job in a tight loop
    won ten rounds in a row under load."""
    for attempt in range(attempts):
        with working_dir(path) as dir_fd:
            try:
                return action(dir_fd)
            except FileNotFoundError:
                if attempt == attempts - 1:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover



# -- the interface ---------------------------------------------------------------------


class TempFile(Protocol):
    """A temporary file being written (what :meth:`Storage.open_temp` returns)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int | None:
        """Write ``data``; returns how many bytes were taken (``None``: all)."""

    def close(self) -> None:
        """Every byte is written: the temporary file is complete (idempotent)."""

    def abort(self) -> None:
        """Stop writing and remove what was written (idempotent)."""


class Download(Protocol):
    """A stored file opened for a download (what :meth:`Storage.open_download` returns)."""

    #: Bytes, and the time it was stored (seconds since the epoch).
    size: int
    modified: float
    #: What :meth:`Storage.metadata` returns for it (``{}`` when none).
    metadata: dict[str, Any]

    def iter_range(self, start: int | None = None, stop: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, stop)`` (all by default) in blocks; closes when done."""

    def close(self) -> None:
        """Release what the download holds (idempotent)."""


class Storage(ABC):
    """Where uploaded files go: temporary files, then stored files with metadata.

    The handle :meth:`open_temp` returns (a path, or an object key) is opaque:
    pass it back to :meth:`finalize`, :meth:`discard` and :meth:`temp_id`.
    """

    #: Flush each stored file to stable storage before answering (local only).
    fsync: bool = False

    @abstractmethod
    def open_temp(self) -> tuple[TempFile, str]:
        """A new, empty temporary file open for writing, and its handle.  The
        caller must :meth:`~TempFile.close` (or :meth:`~TempFile.abort`) it,
        then :meth:`finalize` or :meth:`discard` the handle."""

    @abstractmethod
    def temp_id(self, handle: str) -> str:
        """The id of a temporary file (:data:`TEMP_ID_PATTERN`), e.g. to keep
        it in a session; :meth:`temp_path_for` turns it back into the handle."""

    @abstractmethod
    def temp_path_for(self, temp_id: str) -> str | None:
        """The handle of an existing, complete temporary file by id, or
        ``None`` if the id is malformed or no such file exists."""

    @abstractmethod
    def discard(self, handle: str) -> None:
        """Remove a temporary file; no error if it is already gone."""

    @abstractmethod
    def open_temp_read(self, handle: str) -> BinaryIO:
        """A complete temporary file open for reading from its start (what the
        checks before :meth:`finalize` read); the caller closes it."""

    def temp_local_path(self, handle: str) -> str | None:
        """The temporary file's path when it is a local file (the virus scan
        then sends it with ``sendfile``), else ``None``."""
        return None

    @abstractmethod
    def finalize(self, handle: str, ext: str = "", *, metadata: dict[str, Any] | None = None) -> str:
        """Store a complete temporary file under a fresh random name
        (``<token>.<ext>``, or ``<token>`` when ``ext`` is empty) with
        ``metadata`` (JSON-able) and return the name.  The file becomes
        visible at once, with its metadata, or not at all; the temporary file
        is gone afterwards."""

    @abstractmethod
    def open_download(self, name: str) -> Download | None:
        """The stored file ``name`` for reading, or ``None`` (malformed name, no such file)."""

    @abstractmethod
    def metadata(self, name: str) -> dict[str, Any] | None:
        """The metadata kept for a stored file, or ``None``."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Remove a stored file and its metadata; True if the file existed."""

    @abstractmethod
    def temp_files(self) -> list[str]:
        """Handles of every temporary file (in progress, kept, or left over)."""

    @abstractmethod
    def sweep(self, max_age: float, *, now: float | None = None) -> int:
        """Remove what a crash or an abandoned upload left behind and was not
        modified for ``max_age`` seconds; return how many temporary files went."""


# -- the upload directory --------------------------------------------------------------


class _LocalTempFile(io.FileIO):
    """A temporary file of the upload directory: an unbuffered file that can abort."""

    path = ""

    def abort(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _LocalDownload:
    """A download from the upload directory; ranges by seeking, always closed."""

    def __init__(self, file: BinaryIO, metadata: dict[str, Any]) -> None:
        st = os.fstat(file.fileno())
        self.file = file
        self.size = st.st_size
        self.modified = st.st_mtime
        self.mtime_ns = st.st_mtime_ns
        self.metadata = metadata

    def iter_range(self, start: int | None = None, stop: int | None = None) -> Iterator[bytes]:
        file = self.file
        try:
            if start:
                file.seek(start)
            remaining = None if stop is None else stop - (start or 0)
            while remaining is None or remaining > 0:
                data = file.read(_BLOCK_SIZE if remaining is None else min(_BLOCK_SIZE, remaining))
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            file.close()

    def close(self) -> None:
        self.file.close()


class LocalStorage(Storage):
    """Files of one upload directory.

    ``root``
        The upload directory; created (with ``.tmp`` and ``.meta``) if missing.

    ``fsync``
        When true, :meth:`finalize` flushes each file and the directory to
        stable storage before returning (slower; survives a power cut).
        Default: ``False``.
    """

    @classmethod
    def from_settings(cls, values: SessupSettings) -> LocalStorage:
        """The upload directory ``sessup.upload.path`` (which must be set)."""
        if not values.upload.path:
            raise ConfigurationError("sessup.upload.path (the upload directory) is not set")
        return cls(values.upload.path, fsync=values.upload.fsync)

    def __init__(self, root: str, *, fsync: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.tmp_dir = os.path.join(self.root, TMP_DIR)
        self.meta_dir = os.path.join(self.root, META_DIR)
        self.fsync = fsync
        os.makedirs(self.root, exist_ok=True)
        for path in (self.tmp_dir, self.meta_dir):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass  # (a symlink in its place is refused when it is used)

    # -- temporary files ---------------------------------------------------------------

    def open_temp(self) -> tuple[_LocalTempFile, str]:
        """Create a new, empty temporary file; return it open for writing
        (unbuffered) and its path.  The caller must close it and then
        :meth:`finalize` or :meth:`discard` the path."""
        def create(dir_fd: int) -> tuple[_LocalTempFile, str]:
            while True:
                name = _token() + ".part"
                try:
                    fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
                except FileExistsError:  # pragma: no cover - 192 random bits
                    continue
                try:
                    file = _LocalTempFile(fd, "wb")
                except BaseException:  # pragma: no cover - FileIO over a fresh descriptor
                    os.close(fd)
                    raise
                file.path = os.path.join(self.tmp_dir, name)
                return file, file.path

        return in_working_dir(self.tmp_dir, create)

    def temp_id(self, temp_path: str) -> str:
        """The id of a temporary file (its name without ``.part``), e.g. to
        name a resumable upload in a URL."""
        self._check_temp(temp_path)
        return os.path.basename(temp_path)[: -len(".part")]

    def temp_path_for(self, temp_id: str) -> str | None:
        """The path of an existing temporary file by id, or ``None`` if the id
        is malformed or no such file exists."""
        name = f"{temp_id}.part"
        if not isinstance(temp_id, str) or not TEMP_PATTERN.fullmatch(name):
            return None
        path = os.path.join(self.tmp_dir, name)
        return path if _is_regular(path) else None

    def open_append(self, temp_path: str) -> BinaryIO:
        """Open an existing temporary file for appending (unbuffered), e.g. to
        continue a resumable upload.  Raises ``FileNotFoundError`` if it is gone."""
        self._check_temp(temp_path)
        fd = os.open(temp_path, _APPEND_FLAGS)
        return os.fdopen(fd, "ab", buffering=0)

    def temp_size(self, temp_path: str) -> int:
        """Current size of a temporary file in bytes."""
        self._check_temp(temp_path)
        return os.stat(temp_path, follow_symlinks=False).st_size

    def discard(self, temp_path: str) -> None:
        """Remove a temporary file; no error if it is already gone."""
        self._check_temp(temp_path)
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass

    def open_temp_read(self, temp_path: str) -> BinaryIO:
        self._check_temp(temp_path)
        fd = os.open(temp_path, _READ_FLAGS)
        return os.fdopen(fd, "rb", buffering=0)

    def temp_local_path(self, temp_path: str) -> str | None:
        self._check_temp(temp_path)
        return temp_path

    def _check_temp(self, temp_path: str) -> None:
        if os.path.dirname(temp_path) != self.tmp_dir or not TEMP_PATTERN.fullmatch(os.path.basename(temp_path)):
            raise ValueError("not a temporary file of this upload directory")

    # -- stored files ------------------------------------------------------------------

    def finalize(self, temp_path: str, ext: str = "", *, metadata: dict[str, Any] | None = None) -> str:
        """Give a complete temporary file its final, random name and return
        that name (``<token>.<ext>``, or ``<token>`` when ``ext`` is empty).

        The file is hard-linked to the new name, which fails instead of
        replacing an existing file (a collision simply draws another name),
        then the temporary name is removed.  ``metadata`` (JSON-able) is kept
        beside it and returned by :meth:`metadata`.
        """
        self._check_temp(temp_path)
        if ext and not EXT_PATTERN.fullmatch(ext):
            raise ValueError(f"invalid extension {ext!r}")
        if self.fsync:
            _fsync_path(temp_path)
        suffix = "." + ext if ext else ""
        while True:
            name = _token() + suffix
            final = os.path.join(self.root, name)
            try:
                os.link(temp_path, final, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                # No hard links here: reserve the name exclusively, then move over it.
                try:
                    os.close(os.open(final, _CREATE_FLAGS, 0o600))
                except FileExistsError:
                    continue
                os.replace(temp_path, final)
            break
        try:
            if metadata is not None:
                self.write_metadata(name, metadata)
            self.discard(temp_path)
            if self.fsync:
                _fsync_path(self.root, directory=True)
        except BaseException:
            self.delete(name)
            raise
        return name

    def path_of(self, name: str) -> str | None:
        """Absolute path of the stored file ``name``, or ``None`` when the name
        is malformed (anything but a generated name) or no such file exists."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            return None
        path = os.path.join(self.root, name)
        return path if _is_regular(path) else None

    def open_stored(self, name: str) -> BinaryIO | None:
        """Open a stored file for reading (never through a symlink), or ``None``."""
        path = self.path_of(name)
        if path is None:
            return None
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError:
            return None
        return os.fdopen(fd, "rb")

    def open_download(self, name: str) -> _LocalDownload | None:
        file = self.open_stored(name)
        if file is None:
            return None
        try:
            return _LocalDownload(file, self.metadata(name) or {})
        except BaseException:
            file.close()
            raise

    def delete(self, name: str) -> bool:
        """Remove a stored file and its metadata; True if the file existed."""
        path = self.path_of(name)
        if path is None:
            return False
        for victim in (path, self._meta_path(name)):
            try:
                os.unlink(victim)
            except FileNotFoundError:
                pass
        return True

    def metadata(self, name: str) -> dict[str, Any] | None:
        """The metadata kept for a stored file, or ``None``."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            return None
        try:
            fd = os.open(self._meta_path(name), _READ_FLAGS)
            with os.fdopen(fd, "rb") as f:
                data = json.loads(f.read(1024 * 1024))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_metadata(self, name: str, metadata: dict[str, Any]) -> None:
        """Store ``metadata`` for ``name``.

        ``name`` was drawn a moment ago and not yet given to anyone, so the file is
        written in place (one create, no rename: a tenth of a small upload's
        time went to the temporary name); a left-over file of that name (a
        crash between deleting a stored file and its metadata) is replaced
        atomically instead.
        """
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError("not a stored file name")
        data = json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode("utf-8")
        final = name + ".json"
        tmp = f".{_token()}.tmp"

        def fill(fd: int, path: str, dir_fd: int) -> None:
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    if self.fsync:
                        f.flush()
                        os.fsync(f.fileno())
            except BaseException:
                try:
                    os.unlink(path, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                raise

        def write(dir_fd: int) -> None:
            try:
                fill(os.open(final, _CREATE_FLAGS, 0o600, dir_fd=dir_fd), final, dir_fd)
                return
            except FileExistsError:
                pass
            fill(os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=dir_fd), tmp, dir_fd)
            try:
                os.replace(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                os.unlink(tmp, dir_fd=dir_fd)
                raise

        in_working_dir(self.meta_dir, write)

    def _meta_path(self, name: str) -> str:
        return os.path.join(self.meta_dir, name + ".json")

    # -- housekeeping ------------------------------------------------------------------

    def sweep(self, max_age: float, *, now: float | None = None) -> int:
        """Remove temporary files not modified for ``max_age`` seconds (left by
        a crash or an abandoned resumable upload) and return how many.

        Files still being written are modified continuously, so they are
        never old enough to be swept.
        """
        cutoff = (time.time() if now is None else now) - max_age
        removed = 0
        meta_temp = re.compile(r"\.[A-Za-z0-9_-]{32}\.tmp")
        for directory, pattern in ((self.tmp_dir, TEMP_PATTERN), (self.meta_dir, meta_temp)):
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not pattern.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1 if directory == self.tmp_dir else 0
                except FileNotFoundError:
                    continue
        return removed

    def temp_files(self) -> list[str]:
        """Paths of all temporary files (in progress or left over)."""
        try:
            return sorted(e.path for e in os.scandir(self.tmp_dir) if TEMP_PATTERN.fullmatch(e.name))
        except FileNotFoundError:
            return []


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The upload directory's former name.
UploadStorage = LocalStorage


def make_storage(values: SessupSettings) -> Storage:
    """The storage ``sessup.upload.storage`` names, built from the settings."""
    if values.upload.storage == "s3":
        from .s3 import S3Storage

        return S3Storage.from_settings(values)
    return LocalStorage.from_settings(values)


def upload_storage(registry: Any) -> Storage:
    """The application's :class:`Storage`: the one place it is built
    (on first use, then kept on the registry)."""
    storage = getattr(registry, "sessup_upload_storage", None)
    if storage is None:
        storage = registry.sessup_upload_storage = make_storage(registry.sessup_settings)
    return storage
