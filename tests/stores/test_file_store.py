"""The file store's in-place writes: padded, never shrinking, never seen half-written."""
from __future__ import annotations

import threading
from pathlib import Path

from pyramid_sessup.signing import new_session_id
from pyramid_sessup.stores.file import FileStore


def test_shorter_record_is_padded_in_place(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), timeout=60)
    sid = new_session_id()
    store.create(sid, {"v": "x" * 500})
    path = Path(store._record_path(sid))
    inode, size = path.stat().st_ino, path.stat().st_size
    store.update(sid, {"v": "short"}, [])
    assert path.stat().st_ino == inode  # overwritten, not replaced
    assert path.stat().st_size == size  # padded, not truncated
    assert path.read_bytes().rstrip(b" ") == b'{"v":"short"}'
    assert store.load(sid) == {"v": "short"}
    store.update(sid, {"v": "y" * 900}, [])  # longer: grows in place
    assert store.load(sid) == {"v": "y" * 900}


def test_readers_never_see_a_half_written_record(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), timeout=60)
    sid = new_session_id()
    values = ["a" * 3000, "b", "c" * 9000, "d" * 40]
    store.create(sid, {"v": values[0]})
    stop = threading.Event()
    bad: list[object] = []

    def writer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            store.update(sid, {"v": values[i % len(values)]}, [])
            i += 1

    def reader() -> None:
        for _ in range(1500):
            data = store.load(sid)
            if data is None or data.get("v") not in values:
                bad.append(data)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join(120)
    stop.set()
    for t in writers:
        t.join(30)
    assert bad == []
