"""The upload form's colander schema and its validators (from ``sessup.upload.*``).

Every message names the file and the limit, and is a translation string of
the ``pyramid_sessup`` domain, so it follows the page language.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import colander
import deform

from ..settings import SessupSettings
from ..uploads import names
from .i18n import _
from .widget import FILE_KEYS, MultiFileUploadWidget, format_size

MAX_DESCRIPTION = 500


@dataclass(frozen=True)
class UploadLimits:
    """The form's limits, read from the parsed ``sessup.upload.*`` values."""

    max_file_size: int
    max_total_size: int
    max_files: int
    allowed_extensions: tuple[str, ...] = ()
    allowed_types: tuple[str, ...] = ()

    @classmethod
    def from_values(cls, values: SessupSettings) -> UploadLimits:
        return cls(
            max_file_size=values.upload.max_file_size,
            max_total_size=values.upload.max_total_size,
            max_files=values.upload.max_files,
            allowed_extensions=tuple(values.upload.allowed_extensions),
            allowed_types=tuple(values.upload.allowed_types),
        )

    def accept(self) -> str | None:
        """The file input's ``accept`` attribute (a hint to the picker), or None."""
        return ",".join([*("." + e for e in self.allowed_extensions), *self.allowed_types]) or None

    def allowed_text(self) -> str:
        return ", ".join([*("." + e for e in self.allowed_extensions), *self.allowed_types])

    def check_file(self, file: Mapping[str, Any]) -> Any:
        """The message for one unacceptable file, or None."""
        name = file["filename"] or "?"
        if file["size"] > self.max_file_size:
            return _("file-too-large", default="${name} is ${size}; the limit is ${limit} per file.",
                     mapping={"name": name, "size": format_size(file["size"]),
                              "limit": format_size(self.max_file_size)})
        extension = names.extension_of(name)
        mimetype = file.get("mimetype") or names.guess_type(extension)
        # The same rules as the pipeline's (extension from the name, type from the extension).
        if not names.extension_allowed(extension, self.allowed_extensions) or \
                not names.type_allowed(mimetype, self.allowed_types):
            return _("file-bad-type", default="${name} is not an accepted type (accepted: ${allowed}).",
                     mapping={"name": name, "allowed": self.allowed_text()})
        return None

    def check_all(self, node: colander.SchemaNode, files: list[dict[str, Any]]) -> None:
        """colander validator of the whole list: at least one, count, total."""
        messages = []
        if not files:
            raise colander.Invalid(node, _("no-files", default="Choose at least one file."))
        for file in files:
            problem = self.check_file(file)
            if problem is not None:
                messages.append(problem)
        if len(files) > self.max_files:
            messages.append(_("too-many-files", default="${count} files chosen; at most ${limit} are accepted.",
                              mapping={"count": len(files), "limit": self.max_files}))
        total = sum(file["size"] for file in files)
        if total > self.max_total_size:
            messages.append(_("total-too-large", default="Together the files are ${size}; the limit is ${limit}.",
                              mapping={"size": format_size(total), "limit": format_size(self.max_total_size)}))
        if messages:
            raise colander.Invalid(node, messages)


class FileList(colander.SchemaType):
    """A list of file dicts (what :class:`MultiFileUploadWidget` produces)."""

    def serialize(self, node: colander.SchemaNode, appstruct: Any) -> Any:
        if appstruct in (colander.null, None):
            return colander.null
        return [dict(item) for item in appstruct]

    def deserialize(self, node: colander.SchemaNode, cstruct: Any) -> Any:
        if cstruct in (colander.null, None, []):
            return colander.null
        if not isinstance(cstruct, (list, tuple)):
            raise colander.Invalid(node, _("not-a-file-list", default="Not a list of files."))
        files = []
        for item in cstruct:
            if not isinstance(item, Mapping) or any(key not in item for key in FILE_KEYS):
                raise colander.Invalid(node, _("not-a-file-list", default="Not a list of files."))
            files.append({key: item[key] for key in FILE_KEYS})
        return files


def upload_schema(tmpstore: Any, limits: UploadLimits, csrf_token: str, field: str = "inputFile") -> colander.Schema:
    """The upload form: CSRF token, a description, and the files (one input)."""
    schema = colander.Schema()
    schema.add(colander.SchemaNode(colander.String(), name="csrf_token", default=csrf_token,
                                   widget=deform.widget.HiddenWidget()))
    schema.add(colander.SchemaNode(
        colander.String(), name="description", title=_("Description"),
        description=_("description-help", default="A few words about these files."),
        validator=colander.Length(max=MAX_DESCRIPTION),
        widget=deform.widget.TextInputWidget(attributes={"maxlength": str(MAX_DESCRIPTION)})))
    schema.add(colander.SchemaNode(
        FileList(), name=field, title=_("Files"),
        description=_("files-help", default="Pick one or more files (at most ${count}, ${size} each).",
                      mapping={"count": limits.max_files, "size": format_size(limits.max_file_size)}),
        validator=limits.check_all,
        missing=colander.required,
        missing_msg=_("no-files", default="Choose at least one file."),
        widget=MultiFileUploadWidget(tmpstore, file_check=limits.check_file, accept=limits.accept())))
    return schema
