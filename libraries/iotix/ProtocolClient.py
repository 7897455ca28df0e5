"""Robot Framework keyword library: talk to brokers and servers as a test client, and check what arrived."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from robot.api import logger
from robot.api.deco import keyword, library
from robot.api.types import Secret

from iotix._robot.coap_keywords import CoapKeywords
from iotix._robot.context import KeywordError, SuiteCleanupListener, get_context
from iotix._robot.convert import seconds
from iotix._robot.iotflow_keywords import IoTFlowKeywords
from iotix._robot.kafka_keywords import KafkaKeywords
from iotix._robot.telemetry import collect, describe_failure, parse_percent, pick_source
from iotix.errors import ConfigurationError
from iotix.services.mqtt_broker import MqttBroker, start_local_broker
from iotix.transport.base import TransportError
from iotix.transport.mqtt_probe import MqttProbe
from iotix.transport.tls import ClientTls, client_tls

__version__ = "0.1.0"


@library(scope="GLOBAL", version=__version__, auto_keywords=False, listener=SuiteCleanupListener(), doc_format="ROBOT")
class ProtocolClient(CoapKeywords, IoTFlowKeywords, KafkaKeywords):
    """Test-side clients: local brokers to run against, and connections that subscribe, publish and check.

    = Receivers and aliases =

    `Connect To MQTT Broker` opens a connection under an ``alias`` (``default`` unless given). From
    `Subscribe To Topic` on, everything that arrives on the subscription is collected in the background:
    `Wait Until Messages Received` and `Get Received Messages` read it, and every IoTix telemetry
    envelope (``deviceId``, ``seq``, ``ts``) is counted per device, so that
    `Telemetry Should Be Received From Fleet` can tell what was lost, duplicated or reordered.

    = Local servers =

    `Start Local MQTT Broker` starts Mosquitto (or, where it is not installed, the embedded amqtt broker)
    on 127.0.0.1 on a port free for this process, so parallel pabot workers never clash. A server
    started by a suite is stopped when that suite ends.

    = TLS =

    `Start Local MQTT Broker` with ``tls=True`` starts a second kind of broker (Mosquitto only) for mutual
    TLS: it requires a client certificate signed by its CA and takes the certificate's common name as the
    user name. Devices get their certificates from `Create Device Certificates` (DeviceFleet); a test
    receiver connects with `Connect To MQTT Broker` and the ``ca_file``, ``cert_file`` and ``key_file``
    the broker returns. Private keys are never logged.
    """

    def __init__(self) -> None:
        self._ctx = get_context()

    @property
    def _probes(self) -> dict[str, MqttProbe]:
        return self._ctx.services.setdefault("probes", {})

    # -- local broker ---------------------------------------------------------------------------------

    @keyword("Start Local MQTT Broker")
    def start_local_mqtt_broker(
        self, kind: str = "auto", tls: bool = False, ca_dir: Path | None = None
    ) -> dict[str, Any]:
        """Starts a local MQTT broker and returns a dictionary with ``host``, ``port``, ``kind`` and ``url``.

        ``kind`` is ``auto`` (Mosquitto when installed, else the embedded broker), ``mosquitto`` or
        ``amqtt``. Mosquitto runs with settings that lose nothing (no queue limit, large in-flight window).
        Only one local broker per process: a second call returns the running one.

        ``tls=True`` starts the local TLS broker instead (Mosquitto only; it runs beside a plain one): TLS 1.2
        or newer, a client certificate signed by the CA in ``ca_dir`` is required, and its common name
        becomes the client's user name. The CA (``ca.pem``, ``ca.key``) is created in ``ca_dir`` unless it is
        there (default: a folder of the broker's, removed when it stops). The server certificate is for
        ``localhost`` and ``127.0.0.1``. The dictionary then also has ``tls`` (true), ``url``
        (``mqtts://...``), ``ca`` (the CA certificate), ``caDir``, and ``clientCert`` / ``clientKey``: a
        client certificate (user name ``iotix-receiver``) for a test receiver.

        | ${broker} =    Start Local MQTT Broker
        | Create Fleet    simple-temperature    host=${broker}[host]    port=${broker}[port]
        |
        | ${secure} =    Start Local MQTT Broker    tls=True    ca_dir=${TEMPDIR}/iotix-ca
        | Connect To MQTT Broker    ${secure}[host]    ${secure}[port]    alias=tls    ca_file=${secure}[ca]
        | ...    cert_file=${secure}[clientCert]    key_file=${secure}[clientKey]
        """
        key = _broker_key(tls)
        what = _broker_name(tls)
        broker: MqttBroker | None = self._ctx.services.get(key)
        if broker is not None and broker.is_running:
            if ca_dir is not None and broker.ca_dir != ca_dir.absolute():
                raise KeywordError(
                    f"The {what} is already running with the CA in '{broker.ca_dir}', not '{ca_dir}': "
                    "stop it first (Stop Local MQTT Broker with tls=True)."
                )
            return broker.info()
        if ca_dir is not None and not tls:
            raise KeywordError("ca_dir is the CA of the local TLS broker: give tls=True too.")
        try:
            broker = start_local_broker(kind=kind, tls=tls, ca_dir=ca_dir)
        except Exception as err:
            raise KeywordError(f"Cannot start a {what} ({kind}): {err}") from None
        self._ctx.services[key] = broker
        self._ctx.own(what, lambda: self.stop_local_mqtt_broker(tls))
        info = broker.info()
        extra = f", CA {info['ca']}" if tls else ""
        logger.info(f"{what.capitalize()} ({info['kind']}) listening on {info['host']}:{info['port']}{extra}.")
        return info

    def _broker(self, tls: bool = False) -> MqttBroker:
        broker: MqttBroker | None = self._ctx.services.get(_broker_key(tls))
        if broker is None:
            flag = " with tls=True" if tls else ""
            raise KeywordError(f"No {_broker_name(tls)} is running: use Start Local MQTT Broker{flag} first.")
        return broker

    @keyword("Stop Local MQTT Broker")
    def stop_local_mqtt_broker(self, tls: bool = False) -> None:
        """Stops the local MQTT broker started by `Start Local MQTT Broker` (nothing if none runs).

        ``tls=True`` stops the local TLS broker.
        """
        broker = self._ctx.services.pop(_broker_key(tls), None)
        if broker is not None:
            broker.stop()
            self._ctx.disown(_broker_name(tls))
            logger.info(f"{_broker_name(tls).capitalize()} stopped.")

    @keyword("Restart Local MQTT Broker")
    def restart_local_mqtt_broker(self, down_for: timedelta = timedelta(0), tls: bool = False) -> dict[str, Any]:
        """Stops the local broker, keeps it down for ``down_for``, and starts it again on the same port.

        Devices lose their connections and come back with backoff; use it to test broker outages.
        ``tls=True`` restarts the local TLS broker (same port, same certificates).
        """
        broker = self._broker(tls)
        broker.restart(down_for=seconds(down_for))
        logger.info(f"{_broker_name(tls).capitalize()} restarted after {seconds(down_for):g} s down.")
        return broker.info()

    # -- connections ----------------------------------------------------------------------------------

    @keyword("Connect To MQTT Broker")
    def connect_to_mqtt_broker(
        self,
        host: str,
        port: int = 1883,
        alias: str = "default",
        client_id: str = "",
        username: str = "",
        password: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value in its error
        timeout: timedelta = timedelta(seconds=10),
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> str:
        """Connects a test client to an MQTT broker under ``alias``; returns the client id.

        ``password`` must be a Robot ``Secret``. The connection comes back by itself if the broker
        restarts, and renews its subscriptions.

        With ``ca_file`` the connection uses TLS (1.2 or newer) and trusts that CA certificate; with
        ``cert_file`` and ``key_file`` it presents a client certificate (mutual TLS). The broker's
        certificate must match ``host``.

        | Connect To MQTT Broker    ${broker}[host]    ${broker}[port]    alias=backend
        | Connect To MQTT Broker    ${secure}[host]    ${secure}[port]    alias=tls    ca_file=${secure}[ca]
        | ...    cert_file=${secure}[clientCert]    key_file=${secure}[clientKey]
        """
        if alias in self._probes:
            raise KeywordError(
                f"Alias '{alias}' is already connected to {self._probes[alias].target}; "
                "disconnect it first or use another alias."
            )
        cid = client_id or f"iotix-probe-{alias}-{os.getpid()}"
        limit = seconds(timeout)
        fleet_of = self._ctx.simulator.fleet_name_of
        tls = _receiver_tls(alias, ca_file, cert_file, key_file)

        async def connect() -> MqttProbe:
            probe = MqttProbe(alias, cid)
            probe.tracker.group_of = fleet_of  # latency per fleet
            try:
                await probe.connect(
                    host,
                    port,
                    username=username or None,
                    password=password.value if password is not None else None,
                    timeout=limit,
                    tls=tls,
                )
            except BaseException:
                await probe.close()  # a refused or failed connection must not keep reconnecting in the background
                raise
            return probe

        try:
            probe = self._ctx.call(connect, timeout=limit + 5)
        except TransportError as err:
            raise KeywordError(f"Cannot connect '{alias}' to MQTT broker {host}:{port}: {err}") from None
        self._probes[alias] = probe
        self._ctx.own(f"MQTT connection '{alias}'", lambda: self.disconnect_from_mqtt_broker(alias))
        return cid

    def _probe(self, alias: str) -> MqttProbe:
        probe = self._probes.get(alias)
        if probe is None:
            known = ", ".join(f"'{a}'" for a in self._probes) or "none"
            raise KeywordError(
                f"No MQTT connection with alias '{alias}' (connected: {known}); use Connect To MQTT Broker first."
            )
        return probe

    @keyword("Disconnect From MQTT Broker")
    def disconnect_from_mqtt_broker(self, alias: str = "default") -> None:
        """Closes the connection ``alias``; what it collected is gone with it."""
        probe = self._probes.pop(alias, None)
        if probe is not None:
            self._ctx.call(probe.close)
            self._ctx.disown(f"MQTT connection '{alias}'")

    @keyword
    def subscribe_to_topic(
        self, topic: str, qos: int = 0, alias: str = "default", timeout: timedelta = timedelta(seconds=10)
    ) -> None:
        """Subscribes ``alias`` to ``topic`` (wildcards ``+`` and ``#`` allowed) and collects from then on.

        Returns once the broker acknowledged the subscription.

        | Subscribe To Topic    iotix/+/+/telemetry    qos=1
        """
        probe = self._probe(alias)
        try:
            self._ctx.call(probe.subscribe, topic, qos, seconds(timeout), timeout=seconds(timeout) + 5)
        except TransportError as err:
            raise KeywordError(str(err)) from None

    @keyword("Publish MQTT Message")
    def publish_mqtt_message(
        self,
        topic: str,
        payload: str | bytes,
        qos: int = 0,
        retain: bool = False,
        alias: str = "default",
        timeout: timedelta = timedelta(seconds=10),
    ) -> None:
        """Publishes one message; with QoS 1 or 2 waits until the broker acknowledged it."""
        probe = self._probe(alias)
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            self._ctx.call(probe.publish, topic, data, qos, retain, seconds(timeout), timeout=seconds(timeout) + 5)
        except TransportError as err:
            raise KeywordError(str(err)) from None

    @keyword
    def wait_until_messages_received(
        self, topic: str, count: int = 1, timeout: timedelta = timedelta(seconds=10), alias: str = "default"
    ) -> list[dict[str, Any]]:
        """Waits until ``count`` messages arrived on the subscription ``topic``; returns them all.

        Each message is a dictionary with ``topic``, ``payload`` (text, or hex for binary), ``qos``,
        ``retain`` and ``receivedAt``. Fails when fewer arrived within ``timeout``.

        | ${msgs} =    Wait Until Messages Received    alerts/#    count=1    timeout=20s
        """
        probe = self._probe(alias)
        limit = seconds(timeout)
        try:
            messages = self._ctx.call(probe.wait_for, topic, count, limit, timeout=limit + 5)
        except TransportError as err:
            raise KeywordError(str(err)) from None
        if len(messages) < count:
            raise AssertionError(
                f"Expected {count} message(s) on '{topic}' (alias '{alias}') within {limit:g} s, got {len(messages)}."
            )
        return [m.as_dict() for m in messages]

    @keyword
    def get_received_messages(self, topic: str, alias: str = "default") -> list[dict[str, Any]]:
        """Returns what arrived on the subscription ``topic`` so far (see `Wait Until Messages Received`)."""
        probe = self._probe(alias)
        try:
            sub = probe.subscription(topic)
        except TransportError as err:
            raise KeywordError(str(err)) from None
        return self._ctx.call(lambda: [m.as_dict() for m in sub.messages])

    # -- assertions -----------------------------------------------------------------------------------

    @keyword
    def telemetry_should_be_received_from_fleet(
        self,
        fleet: str,
        min_messages: int = 1,
        max_loss: str = "0%",
        timeout: timedelta = timedelta(seconds=30),
        source: str = "",
    ) -> dict[str, Any]:
        """Checks, per device of ``fleet``, that its telemetry arrived at the receiver ``source``.

        Every message a device handed to its transport before this keyword started must arrive within
        ``timeout``; sequence gaps count as lost. Passes when every device delivered at least
        ``min_messages`` and the loss is at most ``max_loss`` (``0.1%``). Returns the report (expected,
        received, lost, duplicates, out-of-order, latency, worst devices).

        ``source`` names the receiver: the alias of a subscribed MQTT connection, ``coap`` (the local
        CoAP server), ``observe:<alias>`` (a CoAP observation), ``iotflow`` (the local IoTFlow
        backend's store) or ``kafka:<alias>`` (the Kafka subscriptions of a Kafka connection). By default:
        the local CoAP server (or the only observation) for a CoAP fleet, the IoTFlow backend for an IoTFlow
        fleet that sends over HTTP, the Kafka connection subscribed to a Kafka fleet's topic, else the MQTT
        connection ``default`` (or the only one). An unknown name fails and lists the receivers there are.

        | Telemetry Should Be Received From Fleet    env    min_messages=5    max_loss=0.1%
        | Telemetry Should Be Received From Fleet    vans    source=kafka:default
        """
        max_pct = parse_percent(max_loss)
        f = self._ctx.simulator.fleet(fleet)
        src = pick_source(self._ctx, source, f)
        limit = seconds(timeout)
        check = self._ctx.call(collect, f, src, limit, min_messages, max_pct, timeout=limit + 10)
        report = check.report
        failure = describe_failure(fleet, report, max_pct, min_messages, src.name)
        summary = report.as_dict()
        logger.info(
            f"Fleet '{fleet}' via '{src.name}': {report.received:,} of {report.expected:,} expected "
            f"messages arrived, {report.lost} lost, {report.duplicates} duplicates, "
            f"{report.out_of_order} out of order; latency p50 {summary['latencyMs']['p50']} ms, "
            f"p99 {summary['latencyMs']['p99']} ms."
        )
        if failure:
            raise AssertionError(failure)
        return summary

    @keyword
    def send_command_to_device(self, device_id: str, command: str, alias: str = "default", **parameters: Any) -> None:
        """Publishes ``command`` to the device's command topic, with ``parameters`` as a JSON object.

        The command must be one of the device model's ``commands``. The device records it (see ``Get
        Received Commands`` of DeviceFleet), answers on the command's ``responseTopic`` and acts on
        ``reboot`` (``delayMs=...``) and ``setInterval`` (``intervalMs=...``). Parameter values are JSON
        when they parse as JSON (``3``, ``true``, ``["a"]``), else text.

        | Send Command To Device    gw-0    reboot    delayMs=500
        | Send Command To Device    sensor-3    setInterval    intervalMs=500
        """
        device = self._ctx.simulator.find_device(device_id)
        topics_for = getattr(device.fleet.transport, "command_topics", None)
        topics = self._ctx.call(topics_for, device) if topics_for else {}
        if command not in topics:
            known = ", ".join(topics) or "none"
            raise KeywordError(
                f"Device '{device_id}' (model '{device.fleet.model.id}') has no command "
                f"'{command}'; its commands: {known}."
            )
        params = {k: _jsonable(v) for k, v in parameters.items()}
        self.publish_mqtt_message(topics[command], json.dumps(params), qos=1, alias=alias)
        logger.info(f"Sent '{command}' {params} to {device_id} on {topics[command]}.")


def _broker_key(tls: bool) -> str:
    """Where the context keeps the local plain or TLS broker."""
    return "mqtt_broker_tls" if tls else "mqtt_broker"


def _broker_name(tls: bool) -> str:
    return "local TLS MQTT broker" if tls else "local MQTT broker"


def _receiver_tls(alias: str, ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ClientTls | None:
    """The TLS settings of a test connection (None: plain MQTT)."""
    if ca_file is None and cert_file is None and key_file is None:
        return None
    try:
        return client_tls(ca_file, cert_file, key_file)
    except ConfigurationError as err:
        raise KeywordError(f"Cannot connect '{alias}' over TLS: {err}.") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
