"""The operator in-process: kopf's own runner in a thread with its own event loop.

Used by `mlops dev demo` and by the integration tests (the tests also run it as a subprocess).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any


class OperatorThread:
    def __init__(self, namespaces: list[str], kubeconfig: str | None = None) -> None:
        self.namespaces = namespaces
        if kubeconfig is not None:
            # kopf's login (and the operator's API layer) read it from the environment
            os.environ["KUBECONFIG"] = kubeconfig
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mlops-operator", daemon=True)

    def _run(self) -> None:
        import kopf

        from .. import main

        main.run_in(self.namespaces)
        try:
            asyncio.run(kopf.operator(
                clusterwide=True, standalone=True,  # the informers watch `namespaces` (see main.run_in)
                stop_flag=self.stop_flag, ready_flag=self.ready_flag,
            ))
        except BaseException as exc:
            self.error = exc
            self.ready_flag.set()

    @property
    def ctx(self) -> Any:
        from ..main import Runtime

        return Runtime.ctx

    def start(self, timeout: float = 60) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        if not self.ready_flag.wait(timeout) or self.error:
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        while self.ctx is None:
            if not self.thread.is_alive():
                raise RuntimeError("the operator stopped during its start-up (see its log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("the operator did not finish its start-up")
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)
