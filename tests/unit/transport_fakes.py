"""A fake outcomes object and plain links: what a transport's unit tests give it instead of a fleet."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from iotix.model.loader import load_model_dict
from iotix.transport.base import Credentials, TransportSpec


@dataclass(eq=False)
class FakeLink:
    """A device as a transport sees it (:class:`iotix.transport.base.Link`)."""

    id: str
    index: int = 0
    topic: str | None = None
    conn: Any = None
    seq: int = 0
    fleet: str = "fake"
    model_id: str = "fake-model"

    def variables(self) -> dict[str, Any]:
        return {"deviceId": self.id, "index": self.index, "modelId": self.model_id, "fleet": self.fleet}


@dataclass
class FakeOutcomes:
    """Records every report (:class:`iotix.transport.base.Outcomes`); ``active`` says which links are up."""

    acked: list[tuple[str, int, float | None]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    not_sent_reasons: list[tuple[str, str]] = field(default_factory=list)
    lost: list[tuple[str, str]] = field(default_factory=list)
    commands: list[tuple[str, str, bytes, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    inactive: set[str] = field(default_factory=set)
    command_status: str = "ok"

    def acknowledged(self, link: Any, nbytes: int = 0, latency_s: float | None = None) -> None:
        self.acked.append((link.id, nbytes, latency_s))

    def failed(
        self,
        link: Any,
        reason: str,
        code: str = "error",
        nbytes: int = 0,
        latency_s: float | None = None,
        *,
        fault: bool = True,
        resend: Callable[[int], None] | None = None,
        attempt: int = 0,
        first_try: float | None = None,
    ) -> None:
        self.failures.append(
            {
                "link": link.id,
                "reason": reason,
                "code": code,
                "nbytes": nbytes,
                "fault": fault,
                "resend": resend,
                "attempt": attempt,
            }
        )

    def not_sent(self, link: Any, reason: str) -> None:
        self.not_sent_reasons.append((link.id, reason))

    def connection_lost(self, link: Any, reason: str) -> None:
        self.lost.append((link.id, reason))

    def command_received(self, link: Any, name: str, payload: bytes, where: str) -> str:
        self.commands.append((link.id, name, payload, where))
        return self.command_status

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def is_active(self, link: Any) -> bool:
        return link.id not in self.inactive


def make_spec(
    model: dict[str, Any],
    connection: dict[str, Any] | None = None,
    *,
    fleet: str = "fake",
    credentials: Credentials | None = None,
    tls_dir: str | None = None,
    faults: Any = None,
) -> TransportSpec:
    """A transport spec for a model given as a dict, with connection keys overridden (``faults``: a
    :class:`iotix.fault.faultset.FaultSet` the transport routes its connections through)."""
    m = load_model_dict(model)
    return TransportSpec(
        fleet=fleet,
        model=m,
        connection=MappingProxyType({**m.connection, **(connection or {})}),
        credentials=credentials or Credentials(),
        tls_dir=tls_dir,
        faults=faults,
    )


def make_links(n: int, fleet: str = "fake", model_id: str = "fake-model") -> list[FakeLink]:
    return [FakeLink(f"{fleet}-{i}", i, fleet=fleet, model_id=model_id) for i in range(n)]


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    """Run an async test scenario on a fresh event loop (bounded, so a hang fails instead of blocking)."""

    async def bounded() -> None:
        await asyncio.wait_for(scenario(), timeout)

    asyncio.run(bounded())


async def until(predicate: Callable[[], Any], what: str = "condition", timeout: float = 10.0) -> None:
    """Wait on the running loop until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.002)
