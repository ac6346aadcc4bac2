"""Shadow traffic's cost to the user: the stable server's answers with mirroring off and on, measured in the same run.

The iris model (serve_bench.py's), one 1x4 FP64 JSON row per call. The stable server is pinned to CPU 0, the load
generator and the candidate (the mirror's target) to CPU 1, over loopback. The candidate is granian answering the
iris row's class at once (serve_bench.py's fixed answer): a real candidate's own work would share the generator's
core on a two-core machine and slow the client, not the server; what is measured is what mirroring costs the
stable server. For each round, in turn:

  off      mirroring off (`percent` 0)
  on 100   every call copied to the candidate (`POST /v2/models/iris/mirror {percent: 100}`)
  on 10    one call in ten

two loads: `wrk -c8` as fast as the server goes (req/s, p50, p99), and a paced client at `--rate` calls a second
(p50, p99 of the user's answers: what a user sees at a normal load). The mirror's own counters follow: copies sent,
dropped (a full queue), compared rows and agreement (the fixed answer is the row's class: it must be 1).

    python bench/mirror_bench.py [--duration 10] [--rate 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from serve_bench import GRANIAN_NOOP, PAYLOAD, free_port, make_model, mlops_cmd, start, stop, wrk


def paced(port: int, rate: float, duration: float) -> dict[str, float]:
    """One keep-alive client calling `rate` times a second on a fixed schedule: the answers' p50 and p99 (ms)."""
    body = json.dumps(PAYLOAD).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    took: list[float] = []
    start_at = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start_at < duration:
        due = start_at + n / rate
        if now < due:
            time.sleep(due - now)
        began = time.perf_counter()
        conn.request("POST", "/v2/models/iris/infer", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"answered {resp.status}")
        took.append((time.perf_counter() - began) * 1000)
        n += 1
    conn.close()
    took.sort()
    return {"p50": took[len(took) // 2], "p99": took[int(len(took) * 0.99)]}


def monitoring(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/iris/monitoring", timeout=10) as r:
        return dict(json.loads(r.read()))


def set_mirror(port: int, percent: int) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/iris/mirror", method="POST",
                                 data=json.dumps({"percent": percent, "seconds": 3600}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0, help="the paced client's calls a second")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are printed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    model_dir, _ = make_model(work)
    cand_port, port, monitoring_port = free_port(), free_port(), free_port()
    (work / "granian_noop.py").write_text(GRANIAN_NOOP)
    candidate = start([sys.executable, str(work / "granian_noop.py"), str(cand_port)], cand_port, "tcp:",
                      work / "candidate.log", cpu=1)
    stable = start([*mlops_cmd(model_dir, "iris", port)[:-2], "--monitoring-port", str(monitoring_port),
                    "--mirror-host", "127.0.0.1", "--mirror-port", str(cand_port)],
                   port, "/v2/health/ready", work / "stable.log", cpu=0)
    modes = {"off": 0, "on 100 %": 100, "on 10 %": 10}
    saturated: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    steady: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    mirrored: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    print(f"# stable on CPU 0; wrk -t1 -c8 -d{args.duration}s and the candidate on CPU 1; paced client "
          f"{args.rate:g}/s for {args.duration}s; medians of {args.repeat} rounds", flush=True)
    try:
        url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
        for _ in range(args.repeat):
            for mode, percent in modes.items():
                set_mirror(monitoring_port, percent)
                before = monitoring(monitoring_port)["mirror"]
                saturated[mode].append(wrk(url, json.dumps(PAYLOAD).encode(), {"Content-Type": "application/json"},
                                           work, args.duration, 8))
                steady[mode].append(paced(port, args.rate, args.duration))
                deadline = time.monotonic() + 30  # every copy sent is answered (or failed) before the next mode
                while (m := monitoring(monitoring_port)["mirror"])["sent"] > m["errors"] + m["rows"] and \
                        time.monotonic() < deadline:
                    time.sleep(0.1)
                mirrored[mode].append({k: m[k] - before[k] for k in ("sent", "dropped", "errors", "rows", "agreed")})
    finally:
        stop(stable)
        stop(candidate)

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"{'mirroring':<10} {'wrk req/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'paced p50':>9} {'p99 ms':>7} | "
          f"{'copies':>7} {'dropped':>8} {'agreement':>9}")
    for mode in modes:
        sent, agreed, rows = (med(mirrored[mode], k) for k in ("sent", "agreed", "rows"))
        print(f"{mode:<10} {med(saturated[mode], 'rps'):>9.0f} {med(saturated[mode], 'p50'):>7.2f} "
              f"{med(saturated[mode], 'p99'):>7.2f} | {med(steady[mode], 'p50'):>9.2f} "
              f"{med(steady[mode], 'p99'):>7.2f} | {sent:>7.0f} "
              f"{med(mirrored[mode], 'dropped'):>8.0f} {(agreed / rows if rows else 0):>9.3f}")
    off, on = med(steady["off"], "p99"), med(steady["on 100 %"], "p99")
    print(f"paced p99 with every call mirrored / without: {on / off:.2f}; "
          f"wrk req/s: {med(saturated['on 100 %'], 'rps') / med(saturated['off'], 'rps'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
