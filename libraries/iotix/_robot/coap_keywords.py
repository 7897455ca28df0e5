"""ProtocolClient keywords for CoAP: a local CoAP server to send to, requests, observations.

The local server (receiver ``coap``) and every observation (receiver ``observe:<alias>``) count IoTix
envelopes per device; they register themselves as receivers of CoAP fleets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.aliases import Aliases
from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.types import CoapNotification, CoapRequest, CoapResponse, ServerAddress
from iotix.encode import decode_envelope
from iotix.observe.receivers import Receiver, ReceiverKind, Source
from iotix.observe.tracker import TelemetryTracker
from iotix.services.coap_server import CoapSink
from iotix.transport.coap_client import CoapObservation, coap_request, observe

CONTENT_FORMATS = {"json": 50, "cbor": 60, "text": 0, "octet-stream": 42}
SINK_RECEIVER = "coap"
OBSERVE_PREFIX = "observe:"

#: The local CoAP server and the observations hear CoAP fleets; the server wins over observations.
COAP_RECEIVERS = ReceiverKind(
    "coap",
    claims=lambda fleet: fleet.protocol == "coap",
    missing=lambda fleet, available: (
        f"Fleet '{fleet.name}' ({fleet.protocol}): no CoAP receiver collects its telemetry (available: "
        f"{available}); start a local CoAP server or observe a resource, or name a receiver with source=."
    ),
    ambiguous=lambda fleet, names: (
        f"Fleet '{fleet.name}' ({fleet.protocol}): several CoAP observations could have collected its telemetry "
        f"({', '.join(repr(n) for n in names)}); say which with source=."
    ),
)


class ObservedResource:
    """An observation plus a tracker fed from its notifications (IoTix envelopes). Lives on the loop."""

    def __init__(self, alias: str, observation: CoapObservation, since: float) -> None:
        self.alias = alias
        self.observation = observation
        self.tracker = TelemetryTracker(alias)
        self.since = since
        self._fed = 0

    async def feed(self) -> None:
        notes = self.observation.notifications
        for note in notes[self._fed :]:
            self.tracker.record_envelope(decode_envelope(note["payload"]), note["time"])
        self._fed = len(notes)

    def source(self) -> Source:
        return Source(f"{OBSERVE_PREFIX}{self.alias}", self.tracker, self.since, self.feed)


@dataclass
class CoapState:
    """The local CoAP server of the process and the observations by alias."""

    sink: CoapSink | None = None
    observations: Aliases[ObservedResource] = field(
        default_factory=lambda: Aliases(
            "No CoAP observation '{alias}' (observations: {known}); use Observe CoAP Resource."
        )
    )


def _text(payload: bytes) -> str:
    """UTF-8 text, or hex for binary."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.hex()


def _response(code: str, payload: bytes) -> CoapResponse:
    return {"code": code, "payload": _text(payload), "ok": code.startswith("2.")}


def _address(sink: CoapSink) -> ServerAddress:
    return {"host": sink.host, "port": sink.port, "url": sink.url}


class CoapKeywords(LibraryComponent):
    """The local CoAP server, CoAP requests and observations."""

    @property
    def _state(self) -> CoapState:
        return self.context.state(CoapState)

    # -- local server ---------------------------------------------------------------------------------

    @keyword("Start Local CoAP Server")
    def start_local_coap_server(self, port: int = 0) -> ServerAddress:
        """Starts a CoAP server on 127.0.0.1 that accepts POST and PUT on any path; returns where it listens:
        ``host``, ``port`` and ``url`` (``coap://host:port``).

        It answers 2.04 Changed, records every request per path (`Get CoAP Requests Received`) and counts
        IoTix telemetry per device, so `Telemetry Should Be Received From Fleet` can check a CoAP fleet
        (``source=coap``). ``port=0`` picks a free port. One per process; a second call returns it.

        | ${coap} =    Start Local CoAP Server
        | Create Fleet    coap-soil-sensor    count=10    host=${coap}[host]    port=${coap}[port]
        """
        state = self._state
        running = state.sink
        if running is not None:
            address: ServerAddress | None = self.call(lambda: _address(running) if running.running else None)
            if address is not None:
                return address
            self._forget_sink()
        self.context.receivers.check_free(SINK_RECEIVER)
        fleet_of = self.simulator.fleet_name_of

        async def start() -> tuple[CoapSink, float, ServerAddress]:
            sink = await CoapSink.start(port=port)
            sink.tracker.group_of = fleet_of  # latency per fleet
            return sink, asyncio.get_running_loop().time(), _address(sink)

        try:
            sink, since, address = self.call(start, timeout=max(self.timeout, 30.0))
        except OSError as err:
            raise KeywordError(f"Cannot start a local CoAP server on port {port}: {err}") from None
        state.sink = sink
        # sink.tracker is read when the receiver is asked (on the loop): clearing the sink starts a new one
        self.context.receivers.register(
            Receiver(SINK_RECEIVER, COAP_RECEIVERS.name, lambda: Source(SINK_RECEIVER, sink.tracker, since), rank=1)
        )
        self.context.own("local CoAP server", self.stop_local_coap_server)
        logger.info(f"Local CoAP server listening on {address['url']}.")
        return address

    def _forget_sink(self) -> CoapSink | None:
        sink, self._state.sink = self._state.sink, None
        self.context.receivers.unregister(SINK_RECEIVER)
        return sink

    def _sink(self) -> CoapSink:
        sink = self._state.sink
        if sink is None or not self.call(lambda: sink.running):
            raise KeywordError("No local CoAP server is running: use Start Local CoAP Server first.")
        return sink

    @keyword("Stop Local CoAP Server")
    def stop_local_coap_server(self) -> None:
        """Stops the server of `Start Local CoAP Server` (nothing if none runs)."""
        sink = self._forget_sink()
        if sink is not None:
            self.call(sink.stop)
            self.context.disown("local CoAP server")
            logger.info("Local CoAP server stopped.")

    @keyword("Get CoAP Requests Received")
    def get_coap_requests_received(self, path: str = "", device_id: str = "") -> list[CoapRequest]:
        """Returns the requests the local CoAP server recorded, oldest first, optionally of one ``path``
        and/or one device (the ``deviceId`` of the envelope). Each is a dictionary:

        | =Key=             | =Value=                                                        |
        | ``path``          | the request's path (``/telemetry``)                            |
        | ``method``        | ``POST`` or ``PUT``                                            |
        | ``payload``       | the payload as text (UTF-8), or hex for binary                 |
        | ``contentFormat`` | the Content-Format number, or None when the request had none   |
        | ``deviceId``      | the ``deviceId`` of the IoTix envelope, or None                |
        | ``time``          | when it arrived (epoch seconds)                                |
        """
        sink = self._sink()
        records = self.call(sink.requests, path or None, device_id or None)
        return [cast(CoapRequest, {**r, "payload": _text(r["payload"])}) for r in records]

    # -- requests -------------------------------------------------------------------------------------

    def _request(
        self, method: str, uri: str, payload: str | bytes, content_format: str, timeout: timedelta | None
    ) -> CoapResponse:
        fmt = CONTENT_FORMATS.get(content_format.lower()) if content_format else None
        if content_format and fmt is None:
            try:
                fmt = int(content_format)
            except ValueError:
                raise KeywordError(
                    f"Unknown content format '{content_format}': use one of {', '.join(CONTENT_FORMATS)} or a number."
                ) from None
        data = payload.encode() if isinstance(payload, str) else payload
        limit = self.timeout_or_default(timeout)
        code, body = self.call_wait(coap_request, method, uri, data, fmt, limit, limit=limit)
        logger.info(f"CoAP {method} {uri} -> {code}")
        return _response(code, body)

    @keyword("CoAP GET")
    def coap_get(self, uri: str, timeout: timedelta | None = None) -> CoapResponse:
        """Sends a confirmable GET; returns the response:

        | =Key=       | =Value=                                              |
        | ``code``    | the response code, dotted (``2.05``, ``4.04``)       |
        | ``payload`` | the payload as text (UTF-8), or hex for binary       |
        | ``ok``      | true for a success code (``2.xx``)                   |

        Fails only when no response arrives within ``timeout``; error codes are returned.

        | ${r} =    CoAP GET    coap://127.0.0.1:${port}/telemetry
        | Should Be Equal    ${r}[code]    2.05
        """
        return self._request("GET", uri, b"", "", timeout)

    @keyword("CoAP POST")
    def coap_post(
        self,
        uri: str,
        payload: str | bytes = "",
        content_format: str = "json",
        timeout: timedelta | None = None,
    ) -> CoapResponse:
        """Sends a confirmable POST; returns ``code``, ``payload`` and ``ok`` like `CoAP GET`.

        ``payload`` is text (sent as UTF-8) or bytes; ``content_format`` is json, cbor, text,
        octet-stream or a number; an empty one sends no Content-Format option.

        | ${r} =    CoAP POST    coap://127.0.0.1:${port}/commands/switch    {"state": "off"}
        | Should Be Equal    ${r}[code]    2.04
        """
        return self._request("POST", uri, payload, content_format, timeout)

    @keyword("CoAP PUT")
    def coap_put(
        self,
        uri: str,
        payload: str | bytes = "",
        content_format: str = "json",
        timeout: timedelta | None = None,
    ) -> CoapResponse:
        """Sends a confirmable PUT; see `CoAP POST`."""
        return self._request("PUT", uri, payload, content_format, timeout)

    # -- observe --------------------------------------------------------------------------------------

    @keyword("Observe CoAP Resource")
    def observe_coap_resource(self, uri: str, alias: str = "default", timeout: timedelta | None = None) -> None:
        """Starts observing ``uri`` (GET with Observe) under ``alias``; notifications are collected in the
        background (`Wait Until CoAP Notifications Received`) and IoTix envelopes among them are counted
        per device (``source=observe:<alias>`` for `Telemetry Should Be Received From Fleet`).
        """
        observations = self._state.observations
        taken = observations.find(alias)
        if taken is not None:
            observed = self.call(lambda: taken.observation.uri)
            raise KeywordError(f"Observation alias '{alias}' is in use ({observed}).")
        name = f"{OBSERVE_PREFIX}{alias}"
        self.context.receivers.check_free(name)
        fleet_of = self.simulator.fleet_name_of
        limit = self.timeout_or_default(timeout)

        async def start() -> tuple[ObservedResource, str | None]:
            obs = await observe(uri, limit)
            if obs.error:
                await obs.cancel()
                return ObservedResource(alias, obs, 0.0), obs.error
            res = ObservedResource(alias, obs, asyncio.get_running_loop().time())
            res.tracker.group_of = fleet_of
            return res, None

        res, error = self.call_wait(start, limit=limit)
        if error:
            raise KeywordError(error)
        observations.add(alias, res)
        self.context.receivers.register(Receiver(name, COAP_RECEIVERS.name, res.source))
        self.context.own(f"CoAP observation '{alias}'", lambda: self.stop_observing_coap_resource(alias))

    @keyword("Wait Until CoAP Notifications Received")
    def wait_until_coap_notifications_received(
        self, alias: str = "default", count: int = 1, timeout: timedelta | None = None
    ) -> list[CoapNotification]:
        """Waits until the observation ``alias`` got ``count`` notifications (the first is the answer to
        the initial GET); returns them all. Each is a dictionary:

        | =Key=       | =Value=                                              |
        | ``code``    | the notification's code, dotted (``2.05``)           |
        | ``payload`` | the payload as text (UTF-8), or hex for binary       |
        | ``ok``      | true for a success code (``2.xx``)                   |
        | ``time``    | when it arrived (epoch seconds)                      |
        """
        res = self._state.observations.get(alias)
        observation = res.observation
        limit = self.timeout_or_default(timeout)

        async def wait() -> tuple[list[CoapNotification], str | None, str]:
            await observation.wait_for(count, limit)
            notes = [
                cast(CoapNotification, {**_response(n["code"], n["payload"]), "time": n["time"]})
                for n in observation.notifications
            ]
            return notes, observation.error, observation.uri

        notes, error, uri = self.call_wait(wait, limit=limit)
        if len(notes) < count:
            why = f"; {error}" if error else ""
            raise AssertionError(
                f"Expected {count} notification(s) of {uri} (alias '{alias}') within {limit:g} s, "
                f"got {len(notes)}{why}."
            )
        return notes

    @keyword("Stop Observing CoAP Resource")
    def stop_observing_coap_resource(self, alias: str = "default") -> None:
        """Ends the observation ``alias``."""
        res = self._state.observations.pop(alias)
        if res is not None:
            self.context.receivers.unregister(f"{OBSERVE_PREFIX}{alias}")
            self.call(res.observation.cancel)
            self.context.disown(f"CoAP observation '{alias}'")
