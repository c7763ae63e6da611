#!/usr/bin/env python
"""Benchmark rows for resumable uploads: 1 GiB through tus in 8 MiB chunks,
in one upload and in 4 parallel parts (concatenation).

    .venv/bin/python bench/tus_bench.py [--ini bench/file.ini] [--size-mib 1024] [--chunk-mib 8] [--parts 1,4]

Starts ``pserve <ini> port=<free> data=<tmp> lock=false`` (the bench INIs take
those three variables), writes a file of random bytes, warms the server up
with a two-chunk upload, then uploads the file the way a tus client does:
POST /files/ (creation), PATCH chunk after chunk on one keep-alive
connection, each answered before the next is sent.  With N parts
(``--parts``; each number is one row) the file is cut into N slices, each a
partial upload (``Upload-Concat: partial``) sent by its own thread on its own
connection at the same time, then one ``Upload-Concat: final`` request joins
them.  Prints one Markdown row per part count: throughput (file bytes / wall
time from the first creation to the last answer, which includes the server
joining the parts and committing the file with its sha256), the final
request's own time (the join: copy, hashing pass, commit) and the
server's peak RSS during the upload (VmHWM of the pserve PID, reset through
/proc/PID/clear_refs first) beside its RSS just before.  The sha256 the server reports must match.
Only 127.0.0.1 is contacted; the temporary directory is removed afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
PSERVE = Path(sys.executable).parent / "pserve"
MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        match = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        match = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pserve exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("pserve did not start")


def write_source(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def upload(conn: http.client.HTTPConnection, cookie: str, source: Path, size: int, chunk: int) -> tuple[str, int]:
    """Upload the first ``size`` bytes of ``source``; return the server's sha256 and the PATCH count."""
    conn.request("POST", "/files/", headers={**TUS, "Cookie": cookie, "Upload-Length": str(size),
                                             "Upload-Metadata": "filename YmVuY2guYmlu"})
    res = conn.getresponse()
    res.read()
    if res.status != 201:
        raise SystemExit(f"creation answered {res.status}")
    path = urlsplit(res.getheader("Location", "")).path  # absolute URL or path
    offset = patches = 0
    with open(source, "rb") as f:
        while offset < size:
            body = f.read(min(chunk, size - offset))
            conn.request("PATCH", path, body=body, headers={
                **TUS, "Cookie": cookie, "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream"})
            res = conn.getresponse()
            res.read()
            if res.status != 204:
                raise SystemExit(f"PATCH at {offset} answered {res.status}")
            offset = int(res.getheader("Upload-Offset", "0"))
            patches += 1
    return res.getheader("Sessup-File-Sha256", ""), patches


def upload_parallel(port: int, cookie: str, source: Path, size: int, chunk: int,
                    parts: int) -> tuple[str, int, float]:
    """Upload ``source`` as ``parts`` partial uploads at once, then join them;
    return the server's sha256, the PATCH count and the seconds the final
    request took (the server joining, hashing and committing the file)."""
    step = -(-size // parts)
    slices = [(start, min(size, start + step)) for start in range(0, size, step)]
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=600) for _ in slices]
    urls: list[str] = []
    for conn, (start, end) in zip(conns, slices):  # created one after the other, as clients do
        conn.request("POST", "/files/", headers={**TUS, "Cookie": cookie, "Upload-Length": str(end - start),
                                                 "Upload-Concat": "partial"})
        res = conn.getresponse()
        res.read()
        if res.status != 201:
            raise SystemExit(f"partial creation answered {res.status}")
        urls.append(urlsplit(res.getheader("Location", "")).path)
    counts = [0] * len(slices)
    errors: list[str] = []

    def send(index: int) -> None:
        start, end = slices[index]
        offset = 0
        try:
            with open(source, "rb") as f:
                f.seek(start)
                while offset < end - start:
                    body = f.read(min(chunk, end - start - offset))
                    conns[index].request("PATCH", urls[index], body=body, headers={
                        **TUS, "Cookie": cookie, "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream"})
                    res = conns[index].getresponse()
                    res.read()
                    if res.status != 204:
                        raise RuntimeError(f"PATCH of part {index} at {offset} answered {res.status}")
                    offset = int(res.getheader("Upload-Offset", "0"))
                    counts[index] += 1
        except (OSError, RuntimeError, http.client.HTTPException) as exc:  # reported below: the run stops
            errors.append(str(exc))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(slices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(errors[0])
    joining = time.perf_counter()
    conns[0].request("POST", "/files/", headers={**TUS, "Cookie": cookie, "Upload-Concat": "final;" + " ".join(urls),
                                                 "Upload-Metadata": "filename YmVuY2guYmlu"})
    res = conns[0].getresponse()
    res.read()
    joined = time.perf_counter() - joining
    if res.status != 201:
        raise SystemExit(f"final creation answered {res.status}")
    for conn in conns:
        conn.close()
    return res.getheader("Sessup-File-Sha256", ""), sum(counts), joined


def run(ini: Path, size: int, chunk: int, parts: int = 1) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="sessup-tus-bench-"))
    port = free_port()
    source = data / "source.bin"
    expected = write_source(source, size)
    os.sync()  # the source's own writeback must not slow the measured upload
    proc = subprocess.Popen([str(PSERVE), str(ini), f"port={port}", f"data={data}", "lock=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/csrf")  # sets the visitor cookie that owns the uploads
        res = conn.getresponse()
        res.read()
        cookie = (res.getheader("Set-Cookie") or "").split(";", 1)[0]
        # Warm-up (unmeasured): two chunks, so first-use allocations are not counted as the upload's.
        upload(conn, cookie, source, min(size, 2 * chunk), chunk)
        reset_peak(proc.pid)
        idle = rss_mib(proc.pid)

        started = time.perf_counter()
        join = float("nan")
        if parts > 1:
            sha256, patches, join = upload_parallel(port, cookie, source, size, chunk, parts)
        else:
            sha256, patches = upload(conn, cookie, source, size, chunk)
        elapsed = time.perf_counter() - started
        rss = peak_rss_mib(proc.pid)
        if sha256 != expected:
            raise SystemExit("the server's sha256 does not match the file")
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)
    return {"mib_s": size / MiB / elapsed, "seconds": elapsed, "rss_mib": rss, "idle_mib": idle,
            "patches": patches, "join_s": join}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ini", default=str(HERE / "file.ini"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--parts", default="1,4", help="comma-separated part counts, one row each (1: one upload)")
    args = parser.parse_args()
    counts = [int(p) for p in args.parts.split(",") if p.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit("--parts takes whole numbers of at least 1")
    print("| workload | MiB/s | seconds | PATCHes | final request (s) | server peak RSS (MiB) "
          "| server RSS before (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for parts in counts:
        result = run(Path(args.ini), args.size_mib * MiB, args.chunk_mib * MiB, parts)
        how = "one upload" if parts == 1 else f"{parts} parallel parts, joined"
        label = f"tus {args.size_mib} MiB in {args.chunk_mib} MiB chunks, {how} ({Path(args.ini).name})"
        join = "" if result["join_s"] != result["join_s"] else f"{result['join_s']:.2f}"  # NaN: no join
        print(f"| {label} | {result['mib_s']:.1f} | {result['seconds']:.2f} | {result['patches']:.0f} | {join} "
              f"| {result['rss_mib']:.1f} | {result['idle_mib']:.1f} |", flush=True)
    load = os.getloadavg()
    print(f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, nproc {os.cpu_count()}")


if __name__ == "__main__":
    main()
