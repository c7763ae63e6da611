"""ID rotation under concurrency, against a real pserve on every store.

Each round makes a fresh session, ages its ID past ``rotate_after`` in the
store, then sends 16 concurrent requests with the old cookie (with the lock:
half of them, the other half with the new cookie as soon as it is out, while
the first half still queue on the old ID's lock).  One of them rotates the ID;
the others loaded the old ID before that (and write after it), or arrive
after it (and follow the old ID's forward).  Every request must
succeed and be served the same session, every response that sets a cookie
must set the same new ID, the store must hold one live record (the old ID
forwarding to it), and nothing written may be lost: with
``sessup.session.lock`` every increment is kept; without it, every request's
own key persists.
"""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from .test_resurrection import CLIENT_TIMEOUT, Backend, call, session_cookie

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROUNDS = 20
CONCURRENT = 16
ROTATING = {"sessup.session.rotate_after": "600", "sessup.session.rotate_grace": "30"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, bool, bool], Backend]]:
    """``backend(kind, lock, encrypted)``: a rotating server for that case; one at a time."""
    current: dict[tuple[str, bool, bool], Backend] = {}

    def get(kind: str, lock: bool, encrypted: bool) -> Backend:
        if (kind, lock, encrypted) not in current:
            for other in current.values():
                other.close()
            current.clear()
            extra = {**ROTATING, "sessup.session.encrypt": str(encrypted).lower()}
            current[kind, lock, encrypted] = Backend(kind, lock, tmp_path_factory.mktemp(f"rotate-{kind}-{lock}"),
                                                     extra=extra, threads=CONCURRENT + 2)
        return current[kind, lock, encrypted]

    yield get
    for other in current.values():
        other.close()


def digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("ascii")).hexdigest()[:16]


def together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(CLIENT_TIMEOUT)
            results[i] = fn(i)
        except BaseException as exc:  # reported as a failed answer
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT * 2)
    return results


def one_round(backend: Backend, lock: bool) -> tuple[list[str], int, int]:
    """The problems one rotation under 16 concurrent requests shows, how many
    requests met the race (loaded the old ID and wrote after the rotation), and
    how many loaded the new ID through the old ID's forward (without the lock)."""
    port = backend.server.port
    status, headers, _ = call(port, "GET", "/test/set/start?value=1", None)
    cookie = session_cookie(headers)
    assert status == 200 and cookie, (status, headers)
    old = cookie.split(".", 1)[0]
    assert call(port, "GET", f"/test/due?sid={old}", cookie)[2] == {"aged": True}

    if lock:
        rotated = threading.Event()
        fresh: list[str] = []

        def increment(i: int) -> Any:
            if i < CONCURRENT // 2:
                answer = call(port, "GET", "/test/incr?delay=0.005", cookie)
                if session_cookie(answer[1]):
                    fresh.append(session_cookie(answer[1]) or "")
                    rotated.set()
                return answer
            # The other half take the new cookie as soon as one comes back, while
            # requests with the old cookie are still queued on its lock: both IDs'
            # requests must take the same lock.
            rotated.wait(CLIENT_TIMEOUT)
            return call(port, "GET", "/test/incr?delay=0.005", fresh[0] if fresh else cookie)

        answers = together(CONCURRENT, increment)
    else:
        def write(i: int) -> Any:
            if i >= CONCURRENT // 2:
                time.sleep(0.1)  # half of them after the rotation, most likely: they follow the forward
            return call(port, "GET", f"/test/set/k{i}?value={i}&delay=0.02&digest=1", cookie)

        answers = together(CONCURRENT, write)
    problems = [f"request failed: {a!r}" for a in answers if isinstance(a, BaseException)]
    problems += [f"status {a[0]}" for a in answers if not isinstance(a, BaseException) and a[0] != 200]
    if problems:
        return problems, 0, 0
    new_cookies = {session_cookie(headers) for _, headers, _ in answers} - {None}
    if len(new_cookies) != 1:
        return [f"{len(new_cookies)} different cookies set: {sorted(c[:8] for c in new_cookies if c)}"], 0, 0
    [new_cookie] = new_cookies
    assert new_cookie is not None
    new = new_cookie.split(".", 1)[0]
    if new == old:
        problems.append("no rotation")
    raced = followed = 0
    if lock:
        counts = sorted(body["count"] for _, _, body in answers)
        if counts != list(range(1, CONCURRENT + 1)):  # each increment saw the one before
            problems.append(f"lost increments: {counts}")
        final = call(port, "GET", "/test/info", new_cookie)[2]
        if final != {"new": False, "count": CONCURRENT}:
            problems.append(f"the session under the new ID holds {final}")
    else:
        if any(body["data"].get("start") != "1" for _, _, body in answers):
            problems.append("a request was not served the session")
        loaded = [body["loaded_as"] for _, _, body in answers]
        raced = loaded.count(digest(old)) - 1  # all but the rotating request wrote after the rotation
        followed += loaded.count(digest(new))
        final = call(port, "GET", "/test/set/check?value=1&digest=1", new_cookie)[2]["data"]
        missing = [i for i in range(CONCURRENT) if final.get(f"k{i}") != str(i)]
        if missing:
            problems.append(f"lost writes of {len(missing)} requests")
    if call(port, "GET", f"/test/lookup?sid={old}", None)[2] != {"live": False, "forward": new}:
        problems.append("the old ID does not forward to the new one")
    if call(port, "GET", f"/test/lookup?sid={new}", None)[2] != {"live": True, "forward": None}:
        problems.append("no live record under the new ID")
    return problems, raced, followed


STORES = [("memory", []), ("file", []), ("redis", [pytest.mark.redis]), ("postgresql", [pytest.mark.postgres])]
CASES = [
    pytest.param(kind, lock, False, marks=marks, id=f"{kind}-{'lock' if lock else 'nolock'}")
    for kind, marks in STORES for lock in (False, True)
] + [
    # Encryption at rest rewrites the record for the new ID instead of moving it (stores/encrypted.py).
    pytest.param(kind, lock, True, marks=marks, id=f"{kind}-{'lock' if lock else 'nolock'}-encrypted")
    for kind, marks in STORES for lock in (False, True)
]


@pytest.mark.parametrize("kind, lock, encrypted", CASES)
def test_concurrent_requests_during_a_rotation_lose_nothing(backend: Callable[[str, bool, bool], Backend], kind: str,
                                                            lock: bool, encrypted: bool) -> None:
    server = backend(kind, lock, encrypted)
    problems: list[str] = []
    raced = followed = 0
    for _ in range(ROUNDS):
        found, met, forwarded = one_round(server, lock)
        problems += found
        raced += met
        followed += forwarded
    assert "Traceback" not in server.server.log(), server.server.log()[-3000:]
    assert problems == [], f"{len(problems)} problems in {ROUNDS} rounds: {problems[:10]}"
    if not lock:
        # Requests that loaded the old ID wrote after the rotation: the race was met.
        assert raced > 0, "no request loaded the old ID and wrote after the rotation"
        assert followed > 0, "no request came with the old cookie after the rotation"
