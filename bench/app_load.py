"""A bounded load test of the app on loopback: N concurrent generate requests against a real server
process; every request must be answered (202 then done, or 429 with Retry-After), none lost, and the
server must still answer after.

Usage: python bench/app_load.py [--requests 50] [--max-pending 8] [--seconds 2] [--out FILE]

Prints and writes (default bench/results/app-load.json): requests, accepted, finished, 429s,
failures, p50/p95 latency (request sent to motion ready, for accepted ones; to the answer for 429s),
and the server's resident memory before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_request(base: str, seconds: float, index: int, out: list[dict[str, Any]]) -> None:
    start = time.perf_counter()
    record: dict[str, Any] = {"index": index}
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            body = {"text": "a person walks happily", "seconds": seconds, "seed": index}
            response = client.post("/api/generate", json=body)
            record["status"] = response.status_code
            if response.status_code == 429:
                record["retry_after"] = int(response.headers["retry-after"])
            elif response.status_code == 202:
                job = response.json()["job"]
                while True:
                    state = client.get(f"/api/jobs/{job}").json()
                    if state["status"] in ("done", "failed"):
                        record["job"] = state["status"]
                        break
                    time.sleep(0.05)
    except httpx.HTTPError as exc:
        record["status"] = f"error: {type(exc).__name__}"
    record["seconds"] = time.perf_counter() - start
    out.append(record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-pending", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", default="bench/results/app-load.json")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mofusion.cli", "serve", "--port", str(port), "--device", "cpu",
               "--max-pending", str(args.max_pending)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/api/info", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        # one request first, so the model is warm and memory is measured in its steady state
        one_request(base, args.seconds, -1, [])
        before = rss_mb(server.pid)
        records: list[dict[str, Any]] = []
        threads = [threading.Thread(target=one_request, args=(base, args.seconds, i, records))
                   for i in range(args.requests)]  # fmt: skip
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        after = rss_mb(server.pid)
        alive = httpx.get(f"{base}/api/info", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    accepted = [r for r in records if r["status"] == 202]
    done = [r for r in accepted if r.get("job") == "done"]
    refused = [r for r in records if r["status"] == 429]
    other = [r for r in records if r["status"] not in (202, 429)]
    latency = sorted(r["seconds"] for r in done)

    def pct(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None

    result = {
        "requests": args.requests,
        "answered": len(records),
        "accepted_202": len(accepted),
        "finished_done": len(done),
        "failed_jobs": len(accepted) - len(done),
        "refused_429": len(refused),
        "other_answers": [r["status"] for r in other],
        "retry_after_s": sorted({r["retry_after"] for r in refused}),
        "latency_done_s": {"p50": pct(latency, 0.5), "p95": pct(latency, 0.95), "max": pct(latency, 1.0)},
        "latency_429_s": {
            "p50": pct(sorted(r["seconds"] for r in refused), 0.5),
            "p95": pct(sorted(r["seconds"] for r in refused), 0.95),
        },  # fmt: skip
        "wall_s": round(wall, 2),
        "server_rss_mb": {"before": round(before, 1), "after": round(after, 1)},
        "server_alive_after": alive,
        "max_pending": args.max_pending,
        "motion_seconds": args.seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(result, indent=2))
    if latency:
        print(f"median seconds to a finished motion: {statistics.median(latency):.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    ok = len(records) == args.requests and not other and len(done) == len(accepted) and alive
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
