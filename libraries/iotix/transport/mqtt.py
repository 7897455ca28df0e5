"""MQTT devices: one real paho connection per device, all on the runtime's loop."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import TYPE_CHECKING, Any

from paho.mqtt.enums import MQTTErrorCode

from iotix.behavior import compile_template
from iotix.transport.base import Transport, TransportError
from iotix.transport.paho_driver import LoopClient
from iotix.transport.tls import FleetTls

if TYPE_CHECKING:
    from iotix.fleet.device import Device
    from iotix.fleet.fleet import Fleet

log = logging.getLogger("iotix.transport.mqtt")
OK = MQTTErrorCode.MQTT_ERR_SUCCESS
#: ``periodic`` runs about every 100 ms; keep-alive checks visit every client once per quarter keep-alive
#: period (at most every 5 s), a slice at a time, so 10,000 clients cost a few hundred calls a second.
PERIODIC_S = 0.1


def _on_connect(client: LoopClient, device: Device, flags: Any, reason_code: Any, properties: Any) -> None:
    client.connack_received(reason_code)


def _on_disconnect(client: LoopClient, device: Device, flags: Any, reason_code: Any, properties: Any) -> None:
    client.connection_failed(str(reason_code))
    if device.conn_intentional_close:
        return
    device.fleet.connection_lost(device, f"connection lost ({reason_code})")


def _on_publish(client: LoopClient, device: Device, mid: int, reason_code: Any, properties: Any) -> None:
    side = client.side_mids
    if side and mid in side:  # an alert or a command response, not telemetry: not in the telemetry counters
        side.discard(mid)
        return
    if getattr(reason_code, "is_failure", False):
        device.fleet.delivery_failed(device, f"broker rejected publish: {reason_code}")
    else:
        device.acked += 1


def watch_device_client(client: LoopClient, *, count_acks: bool = False) -> None:
    """Route a device's client events to the fleet: CONNACK and disconnects, and PUBACKs when ``count_acks``.

    The client's ``userdata`` must be the :class:`Device`; an unexpected disconnect calls
    ``fleet.connection_lost`` unless ``device.conn_intentional_close`` is set. Used by adapters that open an MQTT
    connection for a device of another protocol (the hybrid IoTFlow devices of the HTTP adapter).
    """
    client.on_connect = _on_connect
    client.on_disconnect = _on_disconnect
    if count_acks:
        client.on_publish = _on_publish


def publish_telemetry(device: Device, client: LoopClient, payload: bytes, qos: int) -> bool:
    """Publish one telemetry payload to ``device.topic`` (QoS 0 on the corked fast path)."""
    if qos == 0:
        field = client.fast_topic
        if field is None:
            field = client.fast_topic = client.topic_field(device.topic or "")
        if client.publish_qos0(field, payload):
            return True
        device.last_error = "publish failed: not connected"
        return False
    info = client.publish(device.topic or "", payload, qos)
    if info.rc != OK:
        device.last_error = f"publish failed: {info.rc}"
        return False
    client.kick()
    return True


def _on_message(client: LoopClient, device: Device, message: Any) -> None:
    transport: MqttTransport = device.fleet.transport  # type: ignore[assignment]
    name = transport.command_for_topic(device, message.topic)
    if name is not None:
        device.fleet.command_received(device, name, message.payload, message.topic)


class MqttTransport(Transport):
    """paho-mqtt 2.x clients (MQTT 3.1.1 or 5) driven by the runtime loop."""

    protocol = "mqtt"

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(fleet)
        conn = fleet.connection
        self.host: str = str(conn.get("host") or conn.get("broker") or "localhost")
        self.port: int = int(conn.get("port") or (8883 if conn.get("tls") is not None else 1883))
        self.qos: int = int(conn.get("qos", 0))
        self.keepalive: int = int(conn.get("keepAlive", 60))
        self.clean_session: bool = bool(conn.get("cleanSession", True))
        self.mqtt_version: str = str(conn.get("mqttVersion", "3.1.1"))
        self.connect_timeout: float = float(conn.get("connectTimeoutMs", 10000)) / 1000.0
        self.max_inflight: int = int(conn.get("maxInflight", 100))
        self.tls: FleetTls | None = FleetTls.of(fleet)  # connection.tls: one SSL context per distinct file set
        self._client_id = compile_template(str(conn.get("clientIdPattern", "${deviceId}")))
        self._topic = compile_template(str(conn.get("topicPattern", "iotix/${deviceId}/telemetry")))
        self._will = conn.get("lastWill")
        self._commands: list[tuple[str, Any]] = []  # (command name, topic template)
        default_cmd = conn.get("commandTopicPattern")
        for cmd in fleet.model.commands:
            pattern = cmd.topic or default_cmd
            if pattern:
                self._commands.append((cmd.name, compile_template(str(pattern))))
        self._addr: tuple[Any, ...] | None = None
        self._family = socket.AF_INET
        self._misc_cursor = 0

    @property
    def target(self) -> str:
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"

    # -- per-device names ---------------------------------------------------------------------------

    def topic_for(self, device: Device) -> str:
        return self._topic.render_text(device.variables())

    def command_topics(self, device: Device) -> dict[str, str]:
        variables = device.variables()
        out = {}
        for name, tmpl in self._commands:
            out[name] = tmpl.render_text({**variables, "command": name})
        return out

    def command_for_topic(self, device: Device, topic: str) -> str | None:
        for name, t in self.command_topics(device).items():
            if t == topic:
                return name
        return None

    # -- connection ---------------------------------------------------------------------------------

    async def _resolve(self) -> tuple[Any, ...]:
        if self._addr is None:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            except OSError as err:
                raise TransportError(f"cannot resolve broker host '{self.host}': {err}") from None
            family, _, _, _, addr = infos[0]
            self._family, self._addr = family, addr
        return self._addr

    def _new_client(self, device: Device) -> LoopClient:
        variables = device.variables()
        client = LoopClient(
            asyncio.get_running_loop(),
            self._client_id.render_text(variables),
            mqtt_version=self.mqtt_version,
            clean_session=self.clean_session,
            userdata=device,
        )
        client.max_inflight_messages_set(self.max_inflight)
        creds = self.fleet.credentials
        if creds.username is not None:
            client.username_pw_set(creds.username, creds.password)
        if self._will:
            w = self._will
            payload = compile_template(w.get("payload", "")).render(variables)
            if not isinstance(payload, (str, bytes)):
                payload = json.dumps(payload, separators=(",", ":"))
            client.will_set(
                compile_template(str(w["topic"])).render_text(variables),
                payload,
                int(w.get("qos", 0)),
                bool(w.get("retain", False)),
            )
        client.on_connect = _on_connect
        client.on_disconnect = _on_disconnect
        if self.qos > 0:
            client.on_publish = _on_publish
        if self._commands:
            client.on_message = _on_message
        return client

    async def connect(self, device: Device) -> None:
        addr = await self._resolve()
        client: LoopClient | None = device.conn
        if client is None:
            client = device.conn = self._new_client(device)
        device.conn_intentional_close = False
        try:
            tls = self.tls.for_device(device) if self.tls is not None else None
            await client.open(
                self.host,
                self.port,
                keepalive=self.keepalive,
                timeout=self.connect_timeout,
                addr=addr,
                family=self._family,
                tls=tls,
            )
        except TransportError as err:
            raise TransportError(f"device '{device.id}': {err}") from None
        if self._commands:
            topics = [(t, 1) for t in self.command_topics(device).values()]
            client.subscribe(topics)
            client.kick()

    def is_connected(self, device: Device) -> bool:
        client = device.conn
        return client is not None and client._sock is not None and client.is_connected()

    def send(
        self, device: Device, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        client: LoopClient = device.conn
        if client is None or client._sock is None:
            return False
        if qos is None:
            qos = self.qos
        if qos == 0 and not retain and (topic is None or topic == device.topic):
            return publish_telemetry(device, client, payload, 0)
        info = client.publish(topic or device.topic, payload, qos, retain)
        if info.rc != OK:
            device.last_error = f"publish failed: {info.rc}"
            return False
        if topic is not None and qos > 0:  # not telemetry: keep its acknowledgement out of messagesAcked
            if client.side_mids is None:
                client.side_mids = set()
            client.side_mids.add(info.mid)
        if client._out_packet:
            client.kick()
        return True

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until QoS 1/2 messages in flight are acknowledged, before a stop."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if not any(
                d.conn is not None and d.conn._sock is not None and (d.conn._out_messages or d.conn._out_packet)
                for d in self.fleet.devices
            ):
                return
            await asyncio.sleep(0.02)

    async def disconnect(self, device: Device) -> None:
        client: LoopClient | None = device.conn
        if client is None:
            return
        device.conn_intentional_close = True
        client.close_gracefully()

    def drop(self, device: Device) -> None:
        client: LoopClient | None = device.conn
        if client is None:
            return
        device.conn_intentional_close = True
        client.abort()

    def periodic(self, now: float) -> None:
        devices = self.fleet.devices
        n = len(devices)
        if not n:
            return
        sweep_s = min(5.0, max(PERIODIC_S, self.keepalive / 4))
        chunk = max(1, -(-n * PERIODIC_S // sweep_s))
        start = self._misc_cursor % n
        for device in devices[start : start + int(chunk)]:
            client = device.conn
            if client is not None and client._sock is not None:
                client.misc()
        self._misc_cursor = start + int(chunk)
