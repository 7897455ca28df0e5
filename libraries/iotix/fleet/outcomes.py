"""The fleet's side of the seam: :class:`iotix.transport.base.Outcomes` over the delivery bookkeeping.

This is the only module that knows both a transport's reports and the fleet's state: counters on the
devices, the fleet's :class:`~iotix.fleet.delivery.Delivery` (retries, circuit breaker, error state,
transmission log), reconnects and commands. Metrics read what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from iotix.fleet.device import Device, DeviceState

if TYPE_CHECKING:
    from iotix.fleet.delivery import Delivery
    from iotix.fleet.fleet import Fleet

_RUNNING = DeviceState.RUNNING
_ERROR = DeviceState.ERROR


class FleetOutcomes:
    """What a fleet's transport reports, applied to the fleet. Runs on the loop only.

    The links a fleet hands its transport are its :class:`Device` objects, so a report needs no lookup.
    """

    __slots__ = ("_request_based", "delivery", "fleet")

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.delivery: Delivery | None = None  # bound by the fleet once its transport says what it is
        self._request_based = False

    def bind(self, delivery: Delivery, *, request_based: bool) -> None:
        self.delivery = delivery
        self._request_based = request_based

    def acknowledged(self, link: Device, nbytes: int = 0, latency_s: float | None = None) -> None:  # type: ignore[override]
        if self._request_based:
            assert self.delivery is not None
            self.delivery.succeeded(link, nbytes, latency_s)
        else:  # a connection-based ack (a PUBACK): its hand-over is already in the transmission log
            link.acked += 1

    def failed(
        self,
        link: Device,
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
        assert self.delivery is not None
        self.delivery.failed(
            link,
            reason,
            code,
            nbytes,
            latency_s,
            fault=fault,
            resend=resend,
            attempt=attempt,
            first_try=first_try,
        )

    def not_sent(self, link: Device, reason: str) -> None:
        link.last_error = reason

    def connection_lost(self, link: Device, reason: str) -> None:
        self.fleet.connection_lost(link, reason)

    def command_received(self, link: Device, name: str, payload: bytes, where: str) -> str:
        return self.fleet.command_received(link, name, payload, where)

    def problem(self, message: str) -> None:
        self.fleet.report_error(message)

    def is_active(self, link: Device) -> bool:
        state = link.state
        return state is _RUNNING or state is _ERROR
