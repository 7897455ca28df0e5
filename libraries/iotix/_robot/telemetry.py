"""Comparing what a fleet sent with what a receiver collected (shared by ProtocolClient and Metrics).

Which receiver counts a fleet is the registry's business (:class:`iotix.observe.receivers.Receivers`, kept
in the context): receivers register themselves, so nothing here knows a protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import Context, KeywordError
from iotix._robot.types import TelemetryReport as TelemetryReportDict
from iotix.cluster.sharded import ShardedFleet
from iotix.observe.receivers import FleetView, ReceiverError, Source
from iotix.observe.tracker import DeviceResult, TelemetryReport

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet
    from iotix.transport.mqtt_probe import MqttProbe

__all__ = [
    "Check",
    "Source",
    "TelemetryKeywords",
    "collect",
    "describe_failure",
    "expected_now",
    "expected_ranges",
    "parse_percent",
    "pick_source",
    "probe_source",
]


def parse_percent(value: str | float | int, what: str = "max_loss") -> float:
    """``'0.1%'``, ``'0.1'`` or ``0.1`` -> 0.1 (percent)."""
    text = str(value).strip().rstrip("%").strip()
    try:
        pct = float(text)
    except ValueError:
        raise KeywordError(f"{what} must be a percentage like 0.1% or 0, got '{value}'.") from None
    if not 0 <= pct <= 100:
        raise KeywordError(f"{what} must be between 0% and 100%, got {value}.")
    return pct


def probe_source(probe: MqttProbe) -> Source:
    """What an MQTT test connection counts: its tracker, since its first subscription. Runs on the loop.

    With sharded subscriptions (``Subscribe To Topic ... shards=N``) the tracker is brought up to date with
    what their receiver processes collected before each look."""
    return Source(probe.alias, probe.tracker, probe.subscribed_at, probe.refresh if probe.remote else None)


def pick_source(ctx: Context, source: str, fleet: Fleet) -> Source:
    """The receiver named ``source``, or the one that can have heard ``fleet`` (see ``Receivers.pick``).

    The choice and the source are made on the loop (the fleet, trackers and subscription times live there);
    when no receiver, or no single one, fits, the message names the ones there are.
    """

    def pick() -> Source:
        return ctx.receivers.pick(source, FleetView.of(fleet)).source()

    try:
        found: Source = ctx.call(pick)
    except ReceiverError as err:
        raise KeywordError(str(err)) from None
    return found


def expected_ranges(fleet: Fleet, source: Source) -> dict[str, tuple[int, int]]:
    """Per device ``[first, stop)``: from seq 0 when the receiver listened before the device started,
    else from the first sequence number that arrived. Runs on the loop."""
    listening_since = source.listening_since
    out = {}
    for d in fleet.devices:
        started_after = d.started_at > 0 and listening_since is not None and d.started_at >= listening_since
        out[d.id] = (0 if started_after else -1, d.seq)
    return out


def _sharded(fleet: Any) -> bool:
    """Whether ``fleet`` is a sharded fleet: its devices live in its shards' processes, which it asks."""
    return isinstance(fleet, ShardedFleet)


async def expected_now(fleet: Any, source: Source) -> dict[str, tuple[int, int]]:
    """:func:`expected_ranges` of a plain fleet, or of a sharded fleet: its shards compare each device's start
    with the moment the receiver began listening, on the wall clock."""
    if not _sharded(fleet):
        return expected_ranges(fleet, source)
    since = source.listening_since
    loop = asyncio.get_running_loop()
    listening_wall = None if since is None else time.time() - (loop.time() - since)
    return cast("dict[str, tuple[int, int]]", await fleet.expected_since(listening_wall))


async def _sent_by_now(fleet: Any) -> dict[str, int]:
    """Per device, the sequence number its next message will have (plain or sharded fleet)."""
    if not _sharded(fleet):
        return {d.id: d.seq for d in fleet.devices}
    return {d: stop for d, (_, stop) in (await fleet.expected_sequences()).items()}


@dataclass
class Check:
    report: TelemetryReport
    expected: dict[str, tuple[int, int]]


async def collect(fleet: Fleet, source: Source, timeout: float, min_messages: int = 0, max_loss: float = 0.0) -> Check:
    """Wait until every message the fleet had sent when the check began arrived (or ``timeout``).

    With ``max_loss`` (percent) above 0 it is enough that the loss is within it: a check that tolerates loss
    does not wait out its timeout for messages that are really lost.
    """
    loop = asyncio.get_running_loop()
    expected = await expected_now(fleet, source)
    end = loop.time() + timeout
    while True:
        if source.refresh is not None:
            await source.refresh()
        report = source.tracker.report(expected)
        delivered = report.lost == 0 or (max_loss > 0 and report.loss_pct <= max_loss)
        complete = delivered and all(r.received >= min_messages for r in report.devices)
        if complete or loop.time() >= end:
            return Check(report, expected)
        if min_messages:  # wait for new messages too: widen the window to what has been sent by now
            sent = await _sent_by_now(fleet)
            expected = {k: (v[0], sent.get(k, v[1])) for k, v in expected.items()}
        await asyncio.sleep(0.05)


def _most(devices: list[DeviceResult], count: Callable[[DeviceResult], int], n: int = 3) -> str:
    """``id (count), ...`` of the ``n`` devices with the highest ``count`` (those above 0)."""
    ranked = sorted((d for d in devices if count(d)), key=count, reverse=True)
    more = f" and {len(ranked) - n} more" if len(ranked) > n else ""
    return ", ".join(f"{d.device_id} ({count(d):,})" for d in ranked[:n]) + more


def describe_failure(
    fleet: str,
    report: TelemetryReport,
    max_loss: float,
    min_messages: int,
    source: str,
    max_duplicates: int = 0,
    in_order: bool = False,
) -> str | None:
    """The failure message of a check, or None when ``report`` passes it.

    Besides loss and ``min_messages``: more than ``max_duplicates`` duplicates fail, and with ``in_order``
    any message that arrived after a later one of its device fails; both name the devices with the most.
    """
    problems = []
    few = [d for d in report.devices if d.received < min_messages]
    if report.expected == 0 and report.received == 0:
        return (
            f"Fleet '{fleet}' sent nothing that '{source}' could expect: no device has sent a message yet "
            "(is the fleet started and running?)."
        )
    if report.loss_pct > max_loss:
        worst = report.worst(1)
        tail = f"; worst device {worst[0].device_id} lost {worst[0].lost}" if worst else ""
        if worst and worst[0].first_missing:
            tail += f" (first missing seq {', '.join(map(str, worst[0].first_missing[:5]))})"
        problems.append(
            f"lost {report.lost:,} of {report.expected:,} messages ({report.loss_pct:.2f} %), more "
            f"than the allowed {max_loss:g} %{tail}"
        )
    if few:
        sample = ", ".join(f"{d.device_id} ({d.received})" for d in few[:3])
        problems.append(
            f"{len(few)} of {len(report.devices)} devices delivered fewer than {min_messages} "
            f"message{'s' if min_messages != 1 else ''}: {sample}{' ...' if len(few) > 3 else ''}"
        )
    if report.duplicates > max_duplicates:
        problems.append(
            f"{report.duplicates:,} duplicate message{'s' if report.duplicates != 1 else ''} arrived, more than "
            f"the allowed {max_duplicates:,} (max_duplicates); most on " + _most(report.devices, lambda d: d.duplicates)
        )
    if in_order and report.out_of_order:
        problems.append(
            f"{report.out_of_order:,} message{'s' if report.out_of_order != 1 else ''} arrived after a later one "
            "of the same device, none allowed (in_order=True); most on "
            + _most(report.devices, lambda d: d.out_of_order)
        )
    if not problems:
        return None
    extra = []
    if report.duplicates and report.duplicates <= max_duplicates:
        extra.append(f"{report.duplicates} duplicates")
    if report.silent_devices:
        extra.append(f"{len(report.silent_devices)} devices silent")
    if report.invalid_messages:
        extra.append(f"{report.invalid_messages} messages that were not IoTix envelopes")
    suffix = f" ({', '.join(extra)})" if extra else ""
    lead = f"Fleet '{fleet}' " if problems[0].startswith("lost") else f"Fleet '{fleet}': "
    return lead + "; ".join(problems) + f"{suffix} [receiver '{source}']."


class TelemetryKeywords(LibraryComponent):
    """`Telemetry Should Be Received From Fleet`: a fleet's telemetry checked at any receiver."""

    @keyword
    def telemetry_should_be_received_from_fleet(
        self,
        fleet: str,
        min_messages: int = 1,
        max_loss: str = "0%",
        timeout: timedelta = timedelta(seconds=30),
        source: str = "",
        max_duplicates: int = 0,
        in_order: bool = False,
    ) -> TelemetryReportDict:
        """Checks, per device of ``fleet``, that its telemetry arrived at the receiver ``source``.

        Every message a device handed to its transport before this keyword started must arrive within
        ``timeout``; sequence gaps count as lost. Passes when every device delivered at least
        ``min_messages``, the loss is at most ``max_loss`` (``0.1%``), at most ``max_duplicates`` messages
        of the fleet arrived more than once (by device and ``seq``; none by default) and, with
        ``in_order=True``, no message arrived after a later one of its device. A failure names the fleet,
        the figures and the devices with the most lost, duplicated or reordered messages.

        Duplicates are what QoS 1 promises (at least once): a message the broker or the device sent again
        after a lost acknowledgement, for example across a broker restart. A test that provokes that says
        how many it accepts with ``max_duplicates``. Reordering is counted per device: QoS 1 redeliveries
        and retries of requests can overtake later messages. Returns the report:

        | =Key=               | =Value=                                                          |
        | ``devices``         | devices of the fleet                                             |
        | ``expected``        | messages the devices sent that the receiver could expect         |
        | ``received``        | of those, how many arrived                                       |
        | ``lost``            | what did not arrive (sequence gaps)                              |
        | ``lossPercent``     | ``lost`` in percent of ``expected``                              |
        | ``duplicates``      | messages that arrived more than once                             |
        | ``outOfOrder``      | messages that arrived after a later one of their device          |
        | ``silentDevices``   | devices of which nothing arrived                                 |
        | ``invalidMessages`` | messages at the receiver that were not IoTix envelopes           |
        | ``latencyMs``       | end-to-end latency (ms): ``count``, ``min``, ``mean``, percentiles, ``max`` |
        | ``worstDevices``    | the devices that lost most (below)                               |

        The percentiles of ``latencyMs`` are ``p50``, ``p90`` and ``p99``. Each of ``worstDevices`` has
        ``deviceId``, ``lost``, ``received``, ``expected``, ``duplicates`` and ``firstMissing`` (the first
        sequence numbers that did not arrive).

        ``source`` names the receiver: the alias of a subscribed MQTT connection, ``coap`` (the local
        CoAP server), ``observe:<alias>`` (a CoAP observation), ``iotflow`` (the local IoTFlow
        backend's store) or ``kafka:<alias>`` (the Kafka subscriptions of a Kafka connection). By default:
        the local CoAP server (or the only observation) for a CoAP fleet, the IoTFlow backend for an IoTFlow
        fleet that sends over HTTP, the Kafka connection subscribed to a Kafka fleet's topic, else the MQTT
        connection ``default`` (or the only one). An unknown name fails and lists the receivers there are.

        | Telemetry Should Be Received From Fleet    env    min_messages=5    max_loss=0.1%
        | Telemetry Should Be Received From Fleet    vans    source=kafka:default
        | Telemetry Should Be Received From Fleet    env    max_duplicates=10    in_order=True
        """
        max_pct = parse_percent(max_loss)
        if max_duplicates < 0:
            raise KeywordError(f"max_duplicates must be 0 or more, got {max_duplicates}.")
        f = self.call(self.simulator.fleet, fleet)
        src = pick_source(self.context, source, f)
        limit = self.timeout_or_default(timeout)
        check: Check = self.call_wait(collect, f, src, limit, min_messages, max_pct, limit=limit)
        report = check.report
        failure = describe_failure(fleet, report, max_pct, min_messages, src.name, max_duplicates, in_order)
        summary = cast(TelemetryReportDict, report.as_dict())
        logger.info(
            f"Fleet '{fleet}' via '{src.name}': {report.received:,} of {report.expected:,} expected "
            f"messages arrived, {report.lost} lost, {report.duplicates} duplicates, "
            f"{report.out_of_order} out of order; latency p50 {summary['latencyMs']['p50']} ms, "
            f"p99 {summary['latencyMs']['p99']} ms."
        )
        if failure:
            raise AssertionError(failure)
        return summary
