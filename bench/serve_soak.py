"""Model-server soak: `mlops serve` under a steady load for minutes, memory sampled.

    python bench/serve_soak.py [--minutes 5] [--rate 400] [--bound-mb 5]

The iris model of bench/serve_bench.py, served with monitoring on (drift sketches counted per row),
pinned to CPU 0; a paced client on CPU 1 sends `--rate` V2 requests a second over loopback for
`--minutes`, each a batch of 1 to 8 rows drawn from a wide range (values far outside the training
data too, so every sketch bin and the open outer bins are hit). The server's RSS is sampled every
10 s. Prints requests, errors, latency percentiles, RSS after the first minute (warm) and at the
end; exits 1 when the RSS grew by more than `--bound-mb` after warm-up or any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import free_port, make_model, start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load(port: int, pid: int, seconds: float, rate: float) -> dict[str, object]:
    rng = random.Random(3)
    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
    latencies: list[float] = []
    errors = 0
    samples: list[tuple[float, float]] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        n = rng.randint(1, 8)
        rows = [[round(rng.uniform(-5, 15), 2) for _ in range(4)] for _ in range(n)]
        body = {"inputs": [{"name": "x", "shape": [n, 4], "datatype": "FP64", "data": rows}]}
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
        except aiohttp.ClientError:
            errors += 1
        latencies.append(time.perf_counter() - t0)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        start_t = time.monotonic()
        next_sample = start_t
        sent = 0
        while (now := time.monotonic()) - start_t < seconds:
            if now >= next_sample:
                samples.append((now - start_t, rss_mb(pid)))
                next_sample += 10
            due = int((now - start_t) * rate)
            while sent < due:
                task = asyncio.create_task(one(session))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*in_flight)
        samples.append((time.monotonic() - start_t, rss_mb(pid)))
    return {"sent": sent, "errors": errors, "latencies": latencies, "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--bound-mb", type=float, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    model_dir, _ = make_model(work)
    port = free_port()
    proc = start([sys.executable, "-m", "mlops_operator.cli", "serve", "--model-dir", str(model_dir), "--name",
                  "iris", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0", "--monitoring-port", "0"],
                 port, "/v2/health/ready", work / "server.log")
    try:
        os.sched_setaffinity(0, {1})
        result = asyncio.run(load(port, proc.pid, args.minutes * 60, args.rate))
    finally:
        proc.terminate()
        proc.wait(30)
    samples: list[tuple[float, float]] = result["samples"]  # type: ignore[assignment]
    lat = sorted(result["latencies"])  # type: ignore[arg-type]
    warm = next((mb for t, mb in samples if t >= 60), samples[0][1])
    end, peak = samples[-1][1], max(mb for _, mb in samples)
    print(f"{result['sent']} requests in {args.minutes:g} min at {args.rate:g}/s, {result['errors']} failed; "
          f"latency p50 {statistics.median(lat) * 1000:.2f} ms, p99 {lat[int(0.99 * len(lat))] * 1000:.2f} ms")
    print("RSS (MB) every 10 s: " + " ".join(f"{mb:.1f}" for _, mb in samples))
    print(f"RSS: start {samples[0][1]:.1f} MB, warm (1 min) {warm:.1f} MB, peak {peak:.1f} MB, end {end:.1f} MB; "
          f"growth after warm-up {end - warm:+.1f} MB (bound {args.bound_mb:g} MB)")
    ok = result["errors"] == 0 and end - warm <= args.bound_mb
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
