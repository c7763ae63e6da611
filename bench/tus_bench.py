#!/usr/bin/env python
"""Benchmark row for resumable uploads: 1 GiB through tus in 8 MiB chunks.

    .venv/bin/python bench/tus_bench.py [--ini bench/file.ini] [--size-mib 1024] [--chunk-mib 8]

Starts ``pserve <ini> port=<free> data=<tmp> lock=false`` (the bench INIs take
those three variables), writes a file of random bytes, warms the server up
with a two-chunk upload, then uploads the file the way a tus client does: POST /files/ (creation), PATCH chunk after chunk on one
keep-alive connection, each answered before the next is sent.  Prints one
Markdown row: throughput (file bytes / wall time from creation to the final
204, which includes the server committing the file with its sha256) and the
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
import time
from pathlib import Path

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
    path = "/" + res.getheader("Location", "").split("/", 3)[3]
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


def run(ini: Path, size: int, chunk: int) -> dict[str, float]:
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
            "patches": patches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ini", default=str(HERE / "file.ini"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    args = parser.parse_args()
    result = run(Path(args.ini), args.size_mib * MiB, args.chunk_mib * MiB)
    label = f"tus {args.size_mib} MiB in {args.chunk_mib} MiB chunks ({Path(args.ini).name})"
    load = os.getloadavg()
    print("| workload | MiB/s | seconds | PATCHes | server peak RSS (MiB) | server RSS before (MiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {label} | {result['mib_s']:.1f} | {result['seconds']:.2f} | {result['patches']:.0f} "
          f"| {result['rss_mib']:.1f} | {result['idle_mib']:.1f} |")
    print(f"\nload average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, nproc {os.cpu_count()}")


if __name__ == "__main__":
    main()
