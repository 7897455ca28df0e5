"""Comparing what a fleet sent with what a receiver collected (shared by ProtocolClient and Metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from iotix._robot.context import Context, KeywordError
from iotix.fleet.fleet import Fleet
from iotix.observe.tracker import TelemetryReport, TelemetryTracker
from iotix.transport.mqtt_probe import MqttProbe


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


@dataclass
class Source:
    """Where a fleet's telemetry is counted: a receiver's tracker, and since when it listened (loop time).

    ``refresh`` (optional) brings the tracker up to date before each look, for receivers that are read
    rather than pushed to (a backend's store).
    """

    name: str
    tracker: TelemetryTracker
    listening_since: float | None
    refresh: Callable[[], Awaitable[None]] | None = None


def probe_source(probe: MqttProbe) -> Source:
    return Source(probe.alias, probe.tracker, probe.subscribed_at)


def pick_probe(ctx: Context, source: str) -> MqttProbe:
    probes: dict[str, MqttProbe] = ctx.services.setdefault("probes", {})
    if source:
        probe = probes.get(source)
        if probe is None:
            known = ", ".join(f"'{a}'" for a in probes) or "none"
            raise KeywordError(
                f"No receiver with alias '{source}' (connected: {known}); use Connect To MQTT "
                "Broker and Subscribe To Topic first."
            )
        return probe
    if "default" in probes:
        return probes["default"]
    if len(probes) == 1:
        return next(iter(probes.values()))
    if not probes:
        raise KeywordError(
            "No receiver is collecting telemetry: use Connect To MQTT Broker and Subscribe To "
            "Topic before the fleet sends."
        )
    raise KeywordError(f"Several receivers are connected ({', '.join(probes)}); say which with source=.")


def pick_source(ctx: Context, source: str, fleet: Fleet) -> Source:
    """The receiver named ``source``, or the default one for the fleet's protocol.

    Names: an MQTT connection alias, ``coap`` (the local CoAP server), ``observe:<alias>`` (a CoAP
    observation), ``iotflow`` (the local IoTFlow backend's store), ``kafka:<alias>`` (the Kafka subscriptions
    of a Kafka connection). Without a name: the local CoAP server (or the only observation) for a CoAP fleet,
    the IoTFlow backend for an IoTFlow fleet that sends over HTTP, the Kafka connection subscribed to the
    fleet's topic for a Kafka fleet, the MQTT receiver otherwise; a CoAP, IoTFlow or Kafka fleet without its
    receiver fails (an MQTT receiver cannot have seen its telemetry) and the message lists the receivers
    there are.
    """
    from iotix._robot.coap_keywords import coap_sources
    from iotix._robot.iotflow_keywords import iotflow_sources
    from iotix._robot.kafka_keywords import kafka_sources, kafka_topics_of

    others = {**coap_sources(ctx), **iotflow_sources(ctx), **kafka_sources(ctx)}
    if source:
        if source in others:
            return others[source]
        if source in ctx.services.get("probes", {}):
            return probe_source(pick_probe(ctx, source))
        known = [*ctx.services.get("probes", {}), *others]
        raise KeywordError(
            f"No receiver named '{source}' (available: {', '.join(repr(k) for k in known) or 'none'}); connect "
            "and subscribe an MQTT receiver, start a local CoAP server or IoTFlow backend, observe a resource, "
            "or subscribe to a Kafka topic."
        )
    protocol = fleet.model.protocol
    probes = ctx.services.get("probes", {})
    available = ", ".join(repr(k) for k in [*probes, *others]) or "none"
    if protocol == "coap":
        if "coap" in others:
            return others["coap"]
        observed = [k for k in others if k.startswith("observe:")]
        if len(observed) == 1:
            return others[observed[0]]
        if observed:
            raise KeywordError(
                f"Fleet '{fleet.name}' (coap): several CoAP observations could have collected its telemetry "
                f"({', '.join(repr(k) for k in observed)}); say which with source=."
            )
        raise KeywordError(
            f"Fleet '{fleet.name}' (coap): no CoAP receiver collects its telemetry (available: {available}); "
            "start a local CoAP server or observe a resource, or name a receiver with source=."
        )
    connection = fleet.connection
    if protocol == "kafka":
        topic = connection.get("topic")
        consuming = [name for name, topics in kafka_topics_of(ctx).items() if topic in topics]
        if len(consuming) == 1:
            return others[consuming[0]]
        if consuming:
            raise KeywordError(
                f"Fleet '{fleet.name}' (kafka): several Kafka connections consume its topic '{topic}' "
                f"({', '.join(repr(k) for k in consuming)}); say which with source=."
            )
        raise KeywordError(
            f"Fleet '{fleet.name}' (kafka): no Kafka subscription consumes its topic '{topic}' (available: "
            f"{available}); use Connect To Kafka and Subscribe To Kafka Topic, or name a receiver with source=."
        )
    if protocol == "http" and connection.get("flow") == "iotflow" and connection.get("telemetryOver") != "mqtt":
        if "iotflow" in others:
            return others["iotflow"]
        raise KeywordError(
            f"Fleet '{fleet.name}' (http, IoTFlow flow): no local IoTFlow backend collects its telemetry "
            f"(available: {available}); start one with Start Local IoTFlow Backend, or name a receiver with source=."
        )
    if protocol == "http" and not probes:
        raise KeywordError(
            f"Fleet '{fleet.name}' (http): no receiver collects its telemetry (available: {available}); connect "
            "and subscribe an MQTT receiver, start a local IoTFlow backend, or name one with source=."
        )
    return probe_source(pick_probe(ctx, source))


def expected_ranges(fleet: Fleet, source: Source) -> dict[str, tuple[int, int]]:
    """Per device ``[first, stop)``: from seq 0 when the receiver listened before the device started,
    else from the first sequence number that arrived. Runs on the loop."""
    listening_since = source.listening_since
    out = {}
    for d in fleet.devices:
        started_after = d.started_at > 0 and listening_since is not None and d.started_at >= listening_since
        out[d.id] = (0 if started_after else -1, d.seq)
    return out


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
    expected = expected_ranges(fleet, source)
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
            expected = {k: (v[0], fleet.by_id[k].seq) for k, v in expected.items()}
        await asyncio.sleep(0.05)


def describe_failure(
    fleet: str, report: TelemetryReport, max_loss: float, min_messages: int, source: str
) -> str | None:
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
    if not problems:
        return None
    extra = []
    if report.duplicates:
        extra.append(f"{report.duplicates} duplicates")
    if report.silent_devices:
        extra.append(f"{len(report.silent_devices)} devices silent")
    if report.invalid_messages:
        extra.append(f"{report.invalid_messages} messages that were not IoTix envelopes")
    suffix = f" ({', '.join(extra)})" if extra else ""
    lead = f"Fleet '{fleet}' " if problems[0].startswith("lost") else f"Fleet '{fleet}': "
    return lead + "; ".join(problems) + f"{suffix} [receiver '{source}']."
