"""Schema, validators and widget, without HTTP."""
from __future__ import annotations

from pathlib import Path

import colander
import pytest
from pyramid.i18n import TranslationString

from pyramid_sessup.forms.schema import FileList, UploadLimits, format_size
from pyramid_sessup.forms.tempstore import SessionTempStore
from pyramid_sessup.forms.widget import MultiFileUploadWidget
from pyramid_sessup.uploads.pipeline import StoredFile
from pyramid_sessup.uploads.storage import UploadStorage

LIMITS = UploadLimits(max_file_size=100, max_total_size=150, max_files=2, allowed_extensions=("txt", "png"))


def interpolate(message: TranslationString) -> str:
    return message.interpolate()


def file(name: str = "a.txt", size: int = 10, mimetype: str = "text/plain") -> dict:
    return {"uid": name, "filename": name, "mimetype": mimetype, "size": size, "sha256": "0" * 64}


@pytest.mark.parametrize("size, text", [(0, "0 bytes"), (1023, "1023 bytes"), (1024, "1 KiB"),
                                        (1536, "1.5 KiB"), (20 * 1024 * 1024, "20 MiB"), (3 * 1024 ** 3, "3 GiB")])
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_check_file_names_file_and_limit() -> None:
    assert LIMITS.check_file(file(size=100)) is None
    assert interpolate(LIMITS.check_file(file("big.txt", size=101))) == \
        "big.txt is 101 bytes; the limit is 100 bytes per file."
    assert interpolate(LIMITS.check_file(file("x.exe"))) == "x.exe is not an accepted type (accepted: .txt, .png)."


def test_check_all_count_total_and_at_least_one() -> None:
    node = colander.SchemaNode(FileList(), name="inputFile")
    with pytest.raises(colander.Invalid) as info:
        LIMITS.check_all(node, [])
    assert interpolate(info.value.msg) == "Choose at least one file."
    with pytest.raises(colander.Invalid) as info:
        LIMITS.check_all(node, [file("a.txt", 60), file("b.txt", 60), file("c.txt", 60)])
    assert [interpolate(m) for m in info.value.messages()] == [
        "3 files chosen; at most 2 are accepted.", "Together the files are 180 bytes; the limit is 150 bytes."]
    LIMITS.check_all(node, [file("a.txt", 75), file("b.txt", 75)])


def test_file_list_type_rejects_garbage() -> None:
    node = colander.SchemaNode(FileList(), name="inputFile")
    assert node.typ.deserialize(node, colander.null) is colander.null
    assert node.typ.deserialize(node, [file()]) == [file()]
    for bad in ("text", [1], [{"filename": "a"}]):
        with pytest.raises(colander.Invalid):
            node.typ.deserialize(node, bad)


class _Field:
    def __init__(self) -> None:
        self.schema = colander.SchemaNode(FileList(), name="inputFile")


def test_widget_deserializes_every_file_and_drops_bad_ones(upload_dir: Path) -> None:
    storage = UploadStorage(str(upload_dir))
    store = SessionTempStore({}, storage, max_age=60)
    widget = MultiFileUploadWidget(store, file_check=LIMITS.check_file)

    def stored(name: str, data: bytes) -> StoredFile:
        out, path = storage.open_temp()
        with out:
            out.write(data)
        return StoredFile("inputFile", name, "text/plain", len(data), "0" * 64, temp_path=path)

    files = widget.deserialize(_Field(), {"upload": [stored("a.txt", b"a"), stored("b.txt", b"bb")], "keep": []})
    assert [(f["filename"], f["size"]) for f in files] == [("a.txt", 1), ("b.txt", 2)]
    with pytest.raises(colander.Invalid) as info:
        widget.deserialize(_Field(), {"upload": [stored("big.txt", b"x" * 101)], "keep": [files[0]["uid"]]})
    # The kept file stays in the value; the bad one is gone from disk.
    assert [f["filename"] for f in info.value.value] == ["a.txt"]
    assert len(storage.temp_files()) == 2
    assert widget.deserialize(_Field(), colander.null) is colander.null
    assert widget.deserialize(_Field(), {"upload": [], "keep": ["unknown"]}) is colander.null
