"""ProtocolClient keywords for CoAP: a local CoAP server to send to, requests, observations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.context import Context, KeywordError
from iotix._robot.convert import seconds
from iotix._robot.telemetry import Source
from iotix.encode import decode_envelope
from iotix.observe.tracker import TelemetryTracker
from iotix.services.coap_server import CoapSink
from iotix.transport.coap_client import CoapClientError, CoapObservation, coap_request, observe

CONTENT_FORMATS = {"json": 50, "cbor": 60, "text": 0, "octet-stream": 42}


class ObservedResource:
    """An observation plus a tracker fed from its notifications (IoTix envelopes)."""

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
        return Source(f"observe:{self.alias}", self.tracker, self.since, self.feed)


def _result(code: str, payload: bytes) -> dict[str, Any]:
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"code": code, "payload": text if text is not None else payload.hex(), "ok": code.startswith("2.")}


class CoapKeywords:
    """Mixed into ProtocolClient (needs ``self._ctx``)."""

    _ctx: Context

    @property
    def _observations(self) -> dict[str, ObservedResource]:
        return self._ctx.services.setdefault("coap_observations", {})

    # -- local server ---------------------------------------------------------------------------------

    @keyword("Start Local CoAP Server")
    def start_local_coap_server(self, port: int = 0) -> dict[str, Any]:
        """Starts a CoAP server on 127.0.0.1 that accepts POST and PUT on any path; returns ``host``,
        ``port`` and ``url``.

        It answers 2.04 Changed, records every request per path (`Get CoAP Requests Received`) and counts
        IoTix telemetry per device, so `Telemetry Should Be Received From Fleet` can check a CoAP fleet
        (``source=coap``). ``port=0`` picks a free port. One per process; a second call returns it.

        | ${coap} =    Start Local CoAP Server
        | Create Fleet    coap-soil-sensor    count=10    host=${coap}[host]    port=${coap}[port]
        """
        sink: CoapSink | None = self._ctx.services.get("coap_sink")
        if sink is not None and sink.running:
            return {"host": sink.host, "port": sink.port, "url": sink.url}

        fleet_of = self._ctx.simulator.fleet_name_of

        async def start() -> tuple[CoapSink, float]:
            sink = await CoapSink.start(port=port)
            sink.tracker.group_of = fleet_of  # latency per fleet
            return sink, asyncio.get_running_loop().time()

        try:
            sink, since = self._ctx.call(start, timeout=30)
        except OSError as err:
            raise KeywordError(f"Cannot start a local CoAP server on port {port}: {err}") from None
        self._ctx.services["coap_sink"] = sink
        self._ctx.services["coap_sink_since"] = since
        self._ctx.own("local CoAP server", self.stop_local_coap_server)
        logger.info(f"Local CoAP server listening on {sink.url}.")
        return {"host": sink.host, "port": sink.port, "url": sink.url}

    def _sink(self) -> CoapSink:
        sink: CoapSink | None = self._ctx.services.get("coap_sink")
        if sink is None or not sink.running:
            raise KeywordError("No local CoAP server is running: use Start Local CoAP Server first.")
        return sink

    @keyword("Stop Local CoAP Server")
    def stop_local_coap_server(self) -> None:
        """Stops the server of `Start Local CoAP Server` (nothing if none runs)."""
        sink = self._ctx.services.pop("coap_sink", None)
        if sink is not None:
            self._ctx.call(sink.stop)
            self._ctx.disown("local CoAP server")
            logger.info("Local CoAP server stopped.")

    @keyword("Get CoAP Requests Received")
    def get_coap_requests_received(self, path: str = "", device_id: str = "") -> list[dict[str, Any]]:
        """Returns the requests the local CoAP server recorded, oldest first, optionally of one ``path``
        and/or one device (the ``deviceId`` of the envelope).

        Each is a dictionary with ``path``, ``method``, ``payload`` (text, or hex for binary),
        ``contentFormat``, ``deviceId`` and ``time``.
        """
        sink = self._sink()
        records = self._ctx.call(sink.requests, path or None, device_id or None)
        out = []
        for r in records:
            item = dict(r)
            item["payload"] = _result("", r["payload"])["payload"]
            out.append(item)
        return out

    # -- requests -------------------------------------------------------------------------------------

    def _request(self, method: str, uri: str, payload: str | bytes, content_format: str, timeout: timedelta) -> Any:
        fmt = CONTENT_FORMATS.get(content_format.lower()) if content_format else None
        if content_format and fmt is None:
            try:
                fmt = int(content_format)
            except ValueError:
                raise KeywordError(
                    f"Unknown content format '{content_format}': use one of {', '.join(CONTENT_FORMATS)} or a number."
                ) from None
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            code, body = self._ctx.call(
                coap_request, method, uri, data, fmt, seconds(timeout), timeout=seconds(timeout) + 10
            )
        except CoapClientError as err:
            raise KeywordError(str(err)) from None
        result = _result(code, body)
        logger.info(f"CoAP {method} {uri} -> {code}")
        return result

    @keyword("CoAP GET")
    def coap_get(self, uri: str, timeout: timedelta = timedelta(seconds=10)) -> dict[str, Any]:
        """Sends a confirmable GET; returns ``code`` (``2.05``), ``payload`` (text, or hex) and ``ok``.

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
        timeout: timedelta = timedelta(seconds=10),
    ) -> dict[str, Any]:
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
        timeout: timedelta = timedelta(seconds=10),
    ) -> dict[str, Any]:
        """Sends a confirmable PUT; see `CoAP POST`."""
        return self._request("PUT", uri, payload, content_format, timeout)

    # -- observe --------------------------------------------------------------------------------------

    @keyword("Observe CoAP Resource")
    def observe_coap_resource(
        self, uri: str, alias: str = "default", timeout: timedelta = timedelta(seconds=10)
    ) -> None:
        """Starts observing ``uri`` (GET with Observe) under ``alias``; notifications are collected in the
        background (`Wait Until CoAP Notifications Received`) and IoTix envelopes among them are counted
        per device (``source=observe:<alias>`` for `Telemetry Should Be Received From Fleet`).
        """
        if alias in self._observations:
            raise KeywordError(f"Observation alias '{alias}' is in use ({self._observations[alias].observation.uri}).")

        fleet_of = self._ctx.simulator.fleet_name_of

        async def start() -> ObservedResource:
            obs = await observe(uri, seconds(timeout))
            res = ObservedResource(alias, obs, asyncio.get_running_loop().time())
            res.tracker.group_of = fleet_of
            return res

        try:
            res = self._ctx.call(start, timeout=seconds(timeout) + 10)
        except CoapClientError as err:
            raise KeywordError(str(err)) from None
        if res.observation.error:
            self._ctx.call(res.observation.cancel)
            raise KeywordError(res.observation.error)
        self._observations[alias] = res
        self._ctx.own(f"CoAP observation '{alias}'", lambda: self.stop_observing_coap_resource(alias))

    def _observation(self, alias: str) -> ObservedResource:
        res = self._observations.get(alias)
        if res is None:
            known = ", ".join(f"'{a}'" for a in self._observations) or "none"
            raise KeywordError(f"No CoAP observation '{alias}' (observations: {known}); use Observe CoAP Resource.")
        return res

    @keyword("Wait Until CoAP Notifications Received")
    def wait_until_coap_notifications_received(
        self, alias: str = "default", count: int = 1, timeout: timedelta = timedelta(seconds=10)
    ) -> list[dict[str, Any]]:
        """Waits until the observation ``alias`` got ``count`` notifications (the first is the answer to
        the initial GET); returns them as dictionaries with ``code``, ``payload`` and ``time``."""
        res = self._observation(alias)
        limit = seconds(timeout)
        self._ctx.call(res.observation.wait_for, count, limit, timeout=limit + 10)
        notes = self._ctx.call(lambda: list(res.observation.notifications))
        if len(notes) < count:
            why = f"; {res.observation.error}" if res.observation.error else ""
            raise AssertionError(
                f"Expected {count} notification(s) of {res.observation.uri} (alias '{alias}') within {limit:g} s, "
                f"got {len(notes)}{why}."
            )
        return [{**_result(n["code"], n["payload"]), "time": n["time"]} for n in notes]

    @keyword("Stop Observing CoAP Resource")
    def stop_observing_coap_resource(self, alias: str = "default") -> None:
        """Ends the observation ``alias``."""
        res = self._observations.pop(alias, None)
        if res is not None:
            self._ctx.call(res.observation.cancel)
            self._ctx.disown(f"CoAP observation '{alias}'")


def coap_sources(ctx: Context) -> dict[str, Source]:
    """The CoAP receivers that can judge a fleet's telemetry, by source name."""
    out: dict[str, Source] = {}
    sink: CoapSink | None = ctx.services.get("coap_sink")
    if sink is not None and sink.running:
        out["coap"] = Source("coap", sink.tracker, ctx.services.get("coap_sink_since"))
    for alias, res in ctx.services.get("coap_observations", {}).items():
        out[f"observe:{alias}"] = res.source()
    return out
