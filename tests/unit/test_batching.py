"""Opportunistic batching: calls waiting at the same moment share one predict, and each gets its own answer."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_operator.runtime import sdk
from mlops_operator.runtime.inference import BadRequest, LoadedModel, Monitor, Served, parse_json
from tests.unit.test_server import Served as ServerProcess
from tests.unit.test_server import tensor


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """A model that refuses NaN (logistic regression), fitted on a numpy array."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    out = tmp_path_factory.mktemp("linear") / "model"
    sdk.save_model(model, X, out)
    return out, model, X


def served(model_dir: Path, max_batch_rows: int = 64) -> Served:
    model = LoadedModel.load("m", model_dir, None)
    return Served("m", model, None, Monitor(model), max_batch_rows=max_batch_rows)


def request(rows: Any, outputs: list[str] | None = None) -> Any:
    body: dict[str, Any] = {"inputs": [tensor([[None if np.isnan(v) else float(v) for v in r] for r in rows])]}
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return parse_json(json.dumps(body).encode())


def model_calls(s: Served) -> float:
    return s.monitor.registry.get_sample_value("mlops_model_calls_total", {"model": "m"}) or 0.0


async def together(s: Served, calls: list[tuple[Any, bool]]) -> list[Any]:
    """The calls started in one turn of the event loop, as a server's connections deliver them."""
    return await asyncio.gather(*(s.infer_batched(r, replay=replay) for r, replay in calls), return_exceptions=True)


def test_calls_waiting_together_share_one_predict_and_each_gets_its_own_rows(linear: tuple[Path, Any, Any]) -> None:
    model_dir, model, X = linear
    rng = np.random.default_rng(3)
    parts = [X[rng.choice(len(X), size=n)] for n in (1, 3, 1, 7, 2, 1, 1, 5)]
    s, alone = served(model_dir), served(model_dir, max_batch_rows=0)
    answers = asyncio.run(together(s, [(request(p), False) for p in parts]))
    for p, (_, outputs) in zip(parts, answers, strict=True):
        assert outputs["predict"].tolist() == model.predict(p).tolist()
        np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(p), rtol=1e-12)
    assert model_calls(s) == 1
    # counted as each call alone would be: the same sketches, rows and predictions
    for p in parts:
        alone.infer(request(p))
    assert model_calls(alone) == len(parts)
    mine, theirs = s.monitor.snapshot(), alone.monitor.snapshot()
    assert mine["rows"] == theirs["rows"] == sum(len(p) for p in parts)
    assert mine["features"] == theirs["features"] and mine["prediction"] == theirs["prediction"]


def test_a_call_the_model_refuses_gets_its_400_and_the_others_their_answers(linear: tuple[Path, Any, Any]) -> None:
    model_dir, model, X = linear
    bad = X[:2].copy()
    bad[1, 2] = np.nan  # logistic regression takes no missing value
    s = served(model_dir)
    answers = asyncio.run(together(s, [(request(X[:3]), False), (request(bad), False), (request(X[5:6]), False)]))
    assert isinstance(answers[1], BadRequest) and answers[1].status == 400 and "NaN" in str(answers[1])
    assert answers[0][1]["predict"].tolist() == model.predict(X[:3]).tolist()
    assert answers[2][1]["predict"].tolist() == model.predict(X[5:6]).tolist()
    assert s.monitor.snapshot()["rows"] == 4  # the refused call's rows are not counted


def test_replayed_calls_in_a_batch_are_answered_but_not_counted(linear: tuple[Path, Any, Any]) -> None:
    model_dir, model, X = linear
    s = served(model_dir)
    calls = [(request(X[:2]), False), (request(X[10:14]), True), (request(X[20:21], ["probabilities"]), False)]
    answers = asyncio.run(together(s, calls))
    assert model_calls(s) == 1
    assert answers[1][1]["predict"].tolist() == model.predict(X[10:14]).tolist()
    assert list(answers[2][1]) == ["probabilities"]  # what the call asked for, whatever the batch computed
    live = served(model_dir, max_batch_rows=0)
    live.infer(request(X[:2]))
    live.infer(request(X[20:21], ["probabilities"]))
    assert s.monitor.snapshot()["features"] == live.monitor.snapshot()["features"]
    assert s.monitor.snapshot()["prediction"] == live.monitor.snapshot()["prediction"]
    assert s.monitor.snapshot()["rows"] == 3


def test_batches_stop_at_max_batch_rows_and_big_calls_go_alone(linear: tuple[Path, Any, Any]) -> None:
    model_dir, model, X = linear
    s = served(model_dir, max_batch_rows=64)
    calls = [(request(X[i * 30:(i + 1) * 30]), False) for i in range(5)] + [(request(X[:100]), False)]
    answers = asyncio.run(together(s, calls))
    assert model_calls(s) == 4  # 30+30 | 30+30 | 30, and the 100 rows alone
    for (r, _), (_, outputs) in zip(calls, answers, strict=True):
        assert outputs["predict"].tolist() == model.predict(r.inputs[0].array).tolist()


def test_concurrent_http_clients_get_their_own_predictions(iris: tuple[Path, Any, Any, str]) -> None:
    model_dir, model, X, _ = iris
    s = ServerProcess(model_dir, "iris")
    wrong: list[Any] = []

    def client(k: int) -> None:
        for i in range(40):
            part = X.iloc[(k * 40 + i) % len(X):][:1 + i % 3]
            status, body = s.infer({"inputs": [tensor(part.to_numpy().tolist())]})
            if status != 200 or body["outputs"][0]["data"] != model.predict(part).tolist():
                wrong.append((status, body, part.to_numpy().tolist()))

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not wrong, wrong[:3]
        from prometheus_client.parser import text_string_to_metric_families

        _, text = s.request("GET", "/metrics", port=s.monitoring_port)
        samples = {x.name: x.value for f in text_string_to_metric_families(text) for x in f.samples
                   if x.name in ("mlops_model_calls_total", "mlops_requests_total")}
        assert samples["mlops_requests_total"] == 320
        assert 0 < samples["mlops_model_calls_total"] <= 320
    finally:
        s.stop()


def test_gather_waits_for_more_calls_only_while_they_arrive_back_to_back(linear: tuple[Path, Any, Any]) -> None:
    """What the gRPC servicer asks for: its calls come one at a time, never in the same loop turn."""
    model_dir, model, X = linear

    async def arrivals(s: Served, gap: float, n: int) -> list[Any]:
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(s.infer_batched(request(X[i:i + 1]), gather=0.01)))
            await asyncio.sleep(gap)
        return await asyncio.gather(*tasks)

    spaced = served(model_dir)
    asyncio.run(arrivals(spaced, 0.03, 8))  # a call every 30 ms: each answered alone, at once
    assert model_calls(spaced) == 8
    burst = served(model_dir)
    answers = asyncio.run(arrivals(burst, 0.0002, 80))  # back to back: once the pace is known, they wait together
    assert model_calls(burst) < 60
    for i, (_, outputs) in enumerate(answers):
        assert outputs["predict"].tolist() == model.predict(X[i:i + 1]).tolist()
