"""Several files through ONE ``<input type="file" multiple>``.

deform's ``FileUploadWidget`` keeps only the last file of a ``multiple`` input
and reports ``size = -1``.  This widget deserializes every file of the input
into a list of file dicts::

    {"uid", "filename", "mimetype", "size", "sha256"}

with the real size and digest computed by the upload pipeline.  Each file is
handed to the session-backed temp store as it is deserialized, so a form that
fails validation elsewhere re-renders with the files listed (a checkbox per
file, checked) and the user does not pick them again.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import colander
from deform.widget import Widget
from pyramid.threadlocal import get_current_request

from .messages import format_size

#: A per-file check: returns an error message (a TranslationString) or None.
FileCheck = Callable[[dict[str, Any]], Any]

FILE_KEYS = ("uid", "filename", "mimetype", "size", "sha256")

__all__ = ["MultiFileUploadWidget", "format_size", "public_filedict", "FILE_KEYS"]


def public_filedict(entry: dict[str, Any]) -> dict[str, Any]:
    """The keys of a temp-store entry that the form (and its templates) see."""
    return {key: entry[key] for key in FILE_KEYS}


class MultiFileUploadWidget(Widget):
    """Render one ``<input type="file" name=... multiple>``; deserialize to a list of files.

    ``tmpstore`` is a :class:`pyramid_sessup.forms.tempstore.SessionTempStore`
    (or anything with ``adopt``, ``get`` and ``discard_new``).
    ``file_check`` rejects one file (too large, wrong type): the file is removed
    at once and its message shown; the other files are kept.

    The pstruct is ``{"upload": [StoredFile, ...], "keep": [uid, ...]}``: new
    files from the streaming parse, and uids of files kept from an earlier try.
    """

    template = "multi_file_upload"
    readonly_template = "multi_file_upload"
    accept: str | None = None
    error_class = "is-invalid"
    #: Name of the checkbox that keeps a file from an earlier try (value: its uid).
    keep_suffix = ".keep"

    def __init__(self, tmpstore: Any, file_check: FileCheck | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.tmpstore = tmpstore
        self.file_check = file_check

    def serialize(self, field: Any, cstruct: Any, **kw: Any) -> str:
        files = [] if cstruct in (colander.null, None) else list(cstruct)
        values = self.get_template_values(field, files, kw)
        values["keep_name"] = field.name + self.keep_suffix
        request = get_current_request()
        localizer = request.localizer if request is not None else None
        values["format_size"] = lambda size: format_size(size, localizer)
        return field.renderer(self.template, **values)

    def deserialize(self, field: Any, pstruct: Any) -> Any:
        if pstruct in (colander.null, None):
            return colander.null
        uploads: Iterable[Any] = pstruct.get("upload") or ()
        keep: Iterable[str] = pstruct.get("keep") or ()
        files: list[dict[str, Any]] = []
        problems: list[Any] = []
        seen: set[str] = set()
        for uid in keep:
            entry = self.tmpstore.get(uid)
            if entry is not None and uid not in seen:
                seen.add(uid)
                files.append(public_filedict(entry))
        for stored in uploads:
            entry = self.tmpstore.adopt(stored)
            problem = self.file_check(entry) if self.file_check else None
            if problem is not None:
                # Rejected on its own merits: never kept, never shown as kept.
                self.tmpstore.remove(entry["uid"])
                problems.append(problem)
                continue
            files.append(public_filedict(entry))
        if problems:
            raise colander.Invalid(field.schema, problems, value=files or colander.null)
        return files or colander.null
