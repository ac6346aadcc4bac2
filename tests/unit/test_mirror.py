"""Shadow traffic from the model server (runtime/mirror.py): two real server processes on loopback ports, the
stable one mirroring to the candidate's monitoring port, as it does to `<name>-preview` in a cluster."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_operator.runtime import sdk
from mlops_operator.runtime.mirror import MirrorError, agreeing, parse_setting
from tests.unit.test_server import Served, tensor


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def monitoring(s: Served) -> dict[str, Any]:
    status, snap = s.request("GET", "/v2/models/iris/monitoring", port=s.monitoring_port)
    assert status == 200
    return dict(snap)


def mirror(s: Served, body: Any) -> tuple[int, Any]:
    return s.request("POST", "/v2/models/iris/mirror", body, port=s.monitoring_port)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """An iris model whose labels 1 and 2 trade places: it disagrees with the other on those classes."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True, as_frame=True)
    y = y.map({0: 0, 1: 2, 2: 1})
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    out = tmp_path_factory.mktemp("swapped") / "model"
    sdk.save_model(model, X, out, validation=(X.head(20), y.head(20)))
    return out, model


@pytest.fixture()
def pair(iris: tuple[Path, Any, Any, str], request: pytest.FixtureRequest) -> Iterator[tuple[Served, Served]]:
    """(stable, candidate): the candidate serves `request.param` (a model directory) or the same model."""
    candidate_dir = getattr(request, "param", None) or iris[0]
    if callable(candidate_dir):
        candidate_dir = candidate_dir(request)
    cand = Served(candidate_dir, "iris")
    stable = Served(iris[0], "iris", "--mirror-host", "127.0.0.1", "--mirror-port", str(cand.monitoring_port))
    yield stable, cand
    stable.stop()
    cand.stop()


def test_every_mirrored_call_reaches_the_candidate_as_a_replayed_call_and_agrees(
        pair: tuple[Served, Served], iris: tuple[Path, Any, Any, str]) -> None:
    stable, cand = pair
    _, model, X, _ = iris
    assert mirror(stable, {"percent": 100, "tolerance": 0, "seconds": 120})[0] == 200
    batches = [X.sample(n, random_state=n).to_numpy().tolist() for n in range(1, 31)]
    for rows in batches:
        status, answer = stable.infer({"inputs": [tensor(rows)]})
        assert status == 200
        assert answer["outputs"][0]["data"] == model.predict(np.array(rows)).tolist()
    rows = sum(len(b) for b in batches)
    snap = wait_for(lambda: (m := monitoring(stable)["mirror"])["rows"] == rows and m, "the candidate's answers")
    assert snap["sent"] == len(batches) and snap["dropped"] == 0 and snap["errors"] == 0
    assert snap["agreed"] == rows
    assert sum(snap["latency"]["counts"]) == len(batches)
    assert snap["percent"] == 100 and snap["target"] == f"http://127.0.0.1:{cand.monitoring_port}/v2/models/iris/infer"
    # the candidate answered each as a call, and none of them counts as its own live data
    candidate = monitoring(cand)
    assert candidate["requests"] == len(batches) and candidate["rows"] == 0
    assert "mirror" in candidate and candidate["mirror"]["sent"] == 0  # it mirrors nothing itself


@pytest.mark.parametrize("pair", [lambda request: request.getfixturevalue("swapped")[0]], indirect=True)
def test_a_candidate_that_disagrees_is_counted_row_by_row(pair: tuple[Served, Served],
                                                          iris: tuple[Path, Any, Any, str],
                                                          swapped: tuple[Path, Any]) -> None:
    stable, _ = pair
    _, model, X, _ = iris
    assert mirror(stable, {"percent": 100, "seconds": 120})[0] == 200
    rows = X.sample(90, random_state=1).to_numpy()
    for i in range(0, 90, 10):
        assert stable.infer({"inputs": [tensor(rows[i:i + 10].tolist())]})[0] == 200
    snap = wait_for(lambda: (m := monitoring(stable)["mirror"])["rows"] == 90 and m, "the candidate's answers")
    expected = int((model.predict(rows) == swapped[1].predict(rows)).sum())  # counted independently
    assert snap["agreed"] == expected < 90 and snap["errors"] == 0


def test_percent_zero_mirrors_nothing_and_a_share_mirrors_about_that_share(pair: tuple[Served, Served],
                                                                            iris: tuple[Path, Any, Any, str]) -> None:
    stable, _ = pair
    row = iris[2].head(1).to_numpy().tolist()
    for _ in range(20):  # never turned on
        assert stable.infer({"inputs": [tensor(row)]})[0] == 200
    assert mirror(stable, {"percent": 0, "seconds": 60})[0] == 200
    for _ in range(20):
        assert stable.infer({"inputs": [tensor(row)]})[0] == 200
    assert monitoring(stable)["mirror"]["sent"] == 0
    assert mirror(stable, {"percent": 25, "seconds": 60})[0] == 200
    for _ in range(400):
        assert stable.infer({"inputs": [tensor(row)]})[0] == 200
    sent = wait_for(lambda: (m := monitoring(stable)["mirror"])["sent"] == m["rows"] and m["sent"], "the mirror")
    assert 60 <= sent <= 140  # 100 expected; far outside is a wrong share (p < 1e-6 for a right one)
    # off again: nothing more is sent
    assert mirror(stable, {"percent": 0})[0] == 200
    for _ in range(20):
        assert stable.infer({"inputs": [tensor(row)]})[0] == 200
    assert monitoring(stable)["mirror"]["sent"] == sent


def test_a_candidate_that_never_answers_slows_no_user_answer_and_the_overflow_is_counted(
        iris: tuple[Path, Any, Any, str]) -> None:
    # a "candidate" that accepts connections and reads, but never answers
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    stable = Served(iris[0], "iris", "--mirror-host", "127.0.0.1", "--mirror-port", str(listener.getsockname()[1]),
                    "--mirror-queue", "5", "--mirror-workers", "1")
    try:
        assert mirror(stable, {"percent": 100, "seconds": 120})[0] == 200
        row = iris[2].head(1).to_numpy().tolist()
        slowest = 0.0
        for _ in range(50):
            started = time.perf_counter()
            assert stable.infer({"inputs": [tensor(row)]})[0] == 200
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 2.0  # the candidate holds each mirrored call for 10 s (the mirror's timeout)
        snap = monitoring(stable)["mirror"]
        # one call in flight, five waiting, every other one dropped: none waits for the candidate
        assert snap["sent"] == 1 and snap["dropped"] == 50 - 1 - 5 and snap["rows"] == 0
    finally:
        stable.stop()
        stop.set()
        thread.join()
        for c in held:
            c.close()
        listener.close()


def test_mirror_settings_are_checked_and_only_on_the_monitoring_port(server: Served) -> None:
    status, body = mirror(server, {"percent": 150})
    assert status == 400 and "percent" in body["error"]
    status, body = mirror(server, {"percent": 10, "target": "http://elsewhere"})
    assert status == 400 and "target" in body["error"]  # the target is never a setting
    status, body = mirror(server, [1])
    assert status == 400
    status, body = server.request("POST", "/v2/models/iris/mirror", {"percent": 10})  # the inference port
    assert status == 404
    status, body = server.request("GET", "/v2/models/iris/mirror", port=server.monitoring_port)
    assert status == 200 and body["percent"] == 0 and body["target"].endswith(":8082/v2/models/iris/infer")
    assert body["target"].startswith("http://iris-preview:")


def test_parse_setting_and_agreement_rules() -> None:
    s = parse_setting({"percent": 50, "tolerance": 0.5, "seconds": 10}, now=1000.0)
    assert s.on(1005.0) and not s.on(1010.0) and s.tolerance == 0.5
    assert not parse_setting({"percent": 0}, now=0).on(0)
    for bad in ({"percent": True}, {"seconds": -1}, {"tolerance": "1"}, {"seconds": 10 ** 9}):
        with pytest.raises(MirrorError, match=next(iter(bad))):
            parse_setting(bad, now=0)
    assert agreeing([1.0, 2.0, 3.0], [1.4, 2.6, None], 0.5, regression=True) == 1
    assert agreeing(["a", 1, "c"], ["a", "1", "b"], 0, regression=False) == 2
