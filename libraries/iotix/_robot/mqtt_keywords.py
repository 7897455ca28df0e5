"""ProtocolClient keywords for MQTT: local brokers to run against, and test connections that subscribe, publish
and check. Every MQTT test connection is a receiver of telemetry under its alias."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

from robot.api import logger
from robot.api.deco import keyword
from robot.api.types import Secret

from iotix._robot.aliases import Aliases
from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix._robot.telemetry import probe_source
from iotix._robot.types import BrokerAddress, ReceivedMessage
from iotix.errors import ConfigurationError
from iotix.observe.receivers import FleetView, Receiver, ReceiverKind
from iotix.services.mqtt_broker import MqttBroker, start_local_broker
from iotix.transport.base import TransportError
from iotix.transport.mqtt_probe import MqttProbe
from iotix.transport.tls import ClientTls, client_tls

#: The alias of a connection that keywords use when none is given; it is also the default receiver.
DEFAULT_ALIAS = "default"


def _missing_receiver(fleet: FleetView, available: str) -> str:
    if fleet.protocol == "mqtt":
        return (
            "No receiver is collecting telemetry: use Connect To MQTT Broker and Subscribe To "
            "Topic before the fleet sends."
        )
    return (  # a fleet of another protocol whose telemetry a server relays to MQTT (an IoTFlow hybrid, ...)
        f"Fleet '{fleet.name}' ({fleet.protocol}): no receiver collects its telemetry (available: {available}); "
        "connect and subscribe an MQTT receiver, start a local IoTFlow backend, or name one with source=."
    )


#: MQTT test connections hear every fleet that no other kind of receiver claims.
MQTT_RECEIVERS = ReceiverKind(
    "mqtt",
    claims=None,
    missing=_missing_receiver,
    ambiguous=lambda fleet, names: f"Several receivers are connected ({', '.join(names)}); say which with source=.",
)


def _broker_name(tls: bool) -> str:
    return "local TLS MQTT broker" if tls else "local MQTT broker"


@dataclass
class MqttBrokers:
    """The local brokers of the process: the plain one and the TLS one."""

    running: dict[bool, MqttBroker] = field(default_factory=dict)  # tls -> broker


@dataclass
class MqttConnections:
    """The MQTT test connections of the process, by alias."""

    probes: Aliases[MqttProbe] = field(
        default_factory=lambda: Aliases(
            "No MQTT connection with alias '{alias}' (connected: {known}); use Connect To MQTT Broker first."
        )
    )


class MqttBrokerKeywords(LibraryComponent):
    """Local MQTT brokers: plain (Mosquitto or the embedded one) and mutual TLS (Mosquitto)."""

    @property
    def _brokers(self) -> dict[bool, MqttBroker]:
        return self.context.state(MqttBrokers).running

    @keyword("Start Local MQTT Broker")
    def start_local_mqtt_broker(
        self, kind: str = "auto", tls: bool = False, ca_dir: Path | None = None
    ) -> BrokerAddress:
        """Starts a local MQTT broker and returns where it listens.

        ``kind`` is ``auto`` (Mosquitto when installed, else the embedded broker), ``mosquitto`` or
        ``amqtt``. Mosquitto runs with settings that lose nothing (no queue limit, large in-flight window).
        Only one local broker per process: a second call returns the running one.

        ``tls=True`` starts the local TLS broker instead (Mosquitto only; it runs beside a plain one): TLS 1.2
        or newer, a client certificate signed by the CA in ``ca_dir`` is required, and its common name
        becomes the client's user name. The CA (``ca.pem``, ``ca.key``) is created in ``ca_dir`` unless it is
        there (default: a folder of the broker's, removed when it stops). The server certificate is for
        ``localhost`` and ``127.0.0.1``.

        | =Key=          | =Value=                                                                   |
        | ``host``       | address it listens on (``127.0.0.1``)                                     |
        | ``port``       | port it listens on                                                        |
        | ``kind``       | ``mosquitto`` or ``amqtt``                                                |
        | ``url``        | ``mqtt://host:port`` (``mqtts://...`` for the TLS broker)                 |
        | ``tls``        | TLS broker only: true                                                     |
        | ``ca``         | TLS broker only: the CA certificate                                       |
        | ``caDir``      | TLS broker only: the folder of the CA                                     |
        | ``clientCert`` | TLS broker only: a client certificate (user name ``iotix-receiver``) for a test receiver |
        | ``clientKey``  | TLS broker only: its private key                                          |

        | ${broker} =    Start Local MQTT Broker
        | Create Fleet    simple-temperature    host=${broker}[host]    port=${broker}[port]
        |
        | ${secure} =    Start Local MQTT Broker    tls=True    ca_dir=${TEMPDIR}/iotix-ca
        | Connect To MQTT Broker    ${secure}[host]    ${secure}[port]    alias=tls    ca_file=${secure}[ca]
        | ...    cert_file=${secure}[clientCert]    key_file=${secure}[clientKey]
        """
        what = _broker_name(tls)
        broker = self._brokers.get(tls)
        if broker is not None and broker.is_running:
            if ca_dir is not None and broker.ca_dir != ca_dir.absolute():
                raise KeywordError(
                    f"The {what} is already running with the CA in '{broker.ca_dir}', not '{ca_dir}': "
                    "stop it first (Stop Local MQTT Broker with tls=True)."
                )
            return cast(BrokerAddress, broker.info())
        if ca_dir is not None and not tls:
            raise KeywordError("ca_dir is the CA of the local TLS broker: give tls=True too.")
        try:
            broker = start_local_broker(kind=kind, tls=tls, ca_dir=ca_dir)
        except Exception as err:
            raise KeywordError(f"Cannot start a {what} ({kind}): {err}") from None
        self._brokers[tls] = broker
        self.context.own(what, lambda: self.stop_local_mqtt_broker(tls))
        info = cast(BrokerAddress, broker.info())
        extra = f", CA {info['ca']}" if tls else ""
        logger.info(f"{what.capitalize()} ({info['kind']}) listening on {info['host']}:{info['port']}{extra}.")
        return info

    def _broker(self, tls: bool = False) -> MqttBroker:
        broker = self._brokers.get(tls)
        if broker is None:
            flag = " with tls=True" if tls else ""
            raise KeywordError(f"No {_broker_name(tls)} is running: use Start Local MQTT Broker{flag} first.")
        return broker

    @keyword("Stop Local MQTT Broker")
    def stop_local_mqtt_broker(self, tls: bool = False) -> None:
        """Stops the local MQTT broker started by `Start Local MQTT Broker` (nothing if none runs).

        ``tls=True`` stops the local TLS broker.
        """
        broker = self._brokers.pop(tls, None)
        if broker is not None:
            broker.stop()
            self.context.disown(_broker_name(tls))
            logger.info(f"{_broker_name(tls).capitalize()} stopped.")

    @keyword("Restart Local MQTT Broker")
    def restart_local_mqtt_broker(self, down_for: timedelta = timedelta(0), tls: bool = False) -> BrokerAddress:
        """Stops the local broker, keeps it down for ``down_for``, and starts it again on the same port.

        Devices lose their connections and come back with backoff; use it to test broker outages.
        ``tls=True`` restarts the local TLS broker (same port, same certificates). Returns the broker's
        address like `Start Local MQTT Broker`.
        """
        broker = self._broker(tls)
        down = seconds(down_for)
        broker.restart(down_for=down)
        logger.info(f"{_broker_name(tls).capitalize()} restarted after {down:g} s down.")
        return cast(BrokerAddress, broker.info())


class MqttClientKeywords(LibraryComponent):
    """MQTT test connections by alias: connect, subscribe, publish, wait for messages, send commands."""

    @property
    def _probes(self) -> Aliases[MqttProbe]:
        return self.context.state(MqttConnections).probes

    @keyword("Connect To MQTT Broker")
    def connect_to_mqtt_broker(
        self,
        host: str,
        port: int = 1883,
        alias: str = DEFAULT_ALIAS,
        client_id: str = "",
        username: str = "",
        password: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value in its error
        timeout: timedelta | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> str:
        """Connects a test client to an MQTT broker under ``alias``; returns the client id.

        ``password`` must be a Robot ``Secret``. The connection comes back by itself if the broker
        restarts, and renews its subscriptions. The connection is the receiver ``alias`` of
        `Telemetry Should Be Received From Fleet`.

        With ``ca_file`` the connection uses TLS (1.2 or newer) and trusts that CA certificate; with
        ``cert_file`` and ``key_file`` it presents a client certificate (mutual TLS). The broker's
        certificate must match ``host``.

        | Connect To MQTT Broker    ${broker}[host]    ${broker}[port]    alias=backend
        | Connect To MQTT Broker    ${secure}[host]    ${secure}[port]    alias=tls    ca_file=${secure}[ca]
        | ...    cert_file=${secure}[clientCert]    key_file=${secure}[clientKey]
        """
        connected = self._probes.find(alias)
        if connected is not None:
            target = self.call(lambda: connected.target)
            raise KeywordError(
                f"Alias '{alias}' is already connected to {target}; disconnect it first or use another alias."
            )
        self.context.receivers.check_free(alias)
        cid = client_id or f"iotix-probe-{alias}-{os.getpid()}"
        limit = self.timeout_or_default(timeout)
        fleet_of = self.simulator.fleet_name_of
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
            probe: MqttProbe = self.call(connect, timeout=limit + 5)
        except TransportError as err:
            raise KeywordError(f"Cannot connect '{alias}' to MQTT broker {host}:{port}: {err}") from None
        self._probes.add(alias, probe)
        self.context.receivers.register(
            Receiver(alias, MQTT_RECEIVERS.name, partial(probe_source, probe), rank=int(alias == DEFAULT_ALIAS))
        )
        self.context.own(f"MQTT connection '{alias}'", lambda: self.disconnect_from_mqtt_broker(alias))
        return cid

    @keyword("Disconnect From MQTT Broker")
    def disconnect_from_mqtt_broker(self, alias: str = DEFAULT_ALIAS) -> None:
        """Closes the connection ``alias``; what it collected is gone with it."""
        probe = self._probes.pop(alias)
        if probe is not None:
            self.context.receivers.unregister(alias)
            self.call(probe.close)
            self.context.disown(f"MQTT connection '{alias}'")

    @keyword
    def subscribe_to_topic(
        self,
        topic: str,
        qos: int = 0,
        alias: str = DEFAULT_ALIAS,
        timeout: timedelta | None = None,
        shards: int = 1,
    ) -> None:
        """Subscribes ``alias`` to ``topic`` (wildcards ``+`` and ``#`` allowed) and collects from then on.

        Returns once the broker acknowledged the subscription. ``+`` stands for one whole level
        (``a/+/c``), ``#`` for every level below and must be the last one (``a/#``); a filter that breaks
        these rules (``a/#/b``, ``a/b+``) fails naming the filter and the rule.

        ``shards=N`` (N from 2 to 64) spreads the subscription over N receiver processes, for rates one
        process cannot take (one Python receiver takes some 25,000 messages a second): each is a Ray actor
        (a local Ray is started unless the library's ``ray_address`` or ``IOTIX_RAY_ADDRESS`` names a
        cluster; Ray is the ``robotframework-iotix[cluster]`` extra) that logs in to the broker as ``alias``
        did and subscribes to the MQTT shared subscription ``$share/<group>/<topic>`` (the broker hands each
        message to one of them; MQTT 5, and Mosquitto 2 for 3.1.1 too). What they receive is merged exactly
        into ``alias``'s figures whenever a keyword reads them (`Telemetry Should Be Received From Fleet`,
        `Wait Until Messages Received`, and Metrics' `Get Telemetry Report`, `Loss Should Be Below`, ...).
        Messages of a sharded subscription are counted, not kept: `Wait Until Messages Received` waits for
        the count and returns an empty list, and `Get Received Messages` fails. A message that reached its
        receiver after a later one of its device counts as out of order; the order between receivers is not
        known. Not over TLS yet. `Disconnect From MQTT Broker`, and the end of the suite, stop the receivers.

        | Subscribe To Topic    iotix/+/+/telemetry    qos=1
        | Subscribe To Topic    iotix/+/+/telemetry    shards=4
        """
        probe = self._probes.get(alias)
        limit = self.timeout_or_default(timeout)
        if shards == 1:
            self.call(probe.subscribe, topic, qos, limit, timeout=limit + 5)
            return
        self._subscribe_sharded(probe, topic, qos, shards, limit)

    def _subscribe_sharded(self, probe: MqttProbe, topic: str, qos: int, shards: int, limit: float) -> None:
        """Subscribe ``probe`` to ``topic`` through ``shards`` receiver actors (see `Subscribe To Topic`)."""
        from iotix.cluster.ray_support import ray_module
        from iotix.cluster.receivers import ReceiverError, open_sharded_subscription

        sim = self.simulator
        address = self.context.ray_address

        async def fleets() -> dict[str, Any]:
            """Every fleet's device ids (receivers keep latencies per fleet)."""
            out: dict[str, Any] = {name: f.by_id.keys() for name, f in sim.fleets.items()}
            out.update({name: f.ids for name, f in sim.sharded.items()})
            return out

        try:
            ray_module(f"Sharded subscriptions (shards={shards})")
            sub = self.call(
                open_sharded_subscription, probe, topic, qos, shards, limit, fleets, address, timeout=limit * 2 + 120
            )
        except (ConfigurationError, ReceiverError) as err:
            raise KeywordError(str(err)) from None
        pids = ", ".join(str(r["pid"]) for r in sub.info())
        logger.info(f"'{probe.alias}' subscribed to '{topic}' through {shards} receiver processes (pids {pids}).")

    @keyword("Publish MQTT Message")
    def publish_mqtt_message(
        self,
        topic: str,
        payload: str | bytes,
        qos: int = 0,
        retain: bool = False,
        alias: str = DEFAULT_ALIAS,
        timeout: timedelta | None = None,
    ) -> None:
        """Publishes one message; with QoS 1 or 2 waits until the broker acknowledged it."""
        probe = self._probes.get(alias)
        data = payload.encode() if isinstance(payload, str) else payload
        limit = self.timeout_or_default(timeout)
        self.call(probe.publish, topic, data, qos, retain, limit, timeout=limit + 5)

    def _listener(self, topic: str, alias: str) -> tuple[str, MqttProbe]:
        """The connection ``alias``; without one, the connection subscribed to ``topic``.

        A connection subscribed to ``topic`` itself wins over those whose wildcard subscription covers it;
        none, or several equally, fail and name the connections and their subscriptions.
        """
        probes = self._probes
        if alias:
            return alias, probes.get(alias)

        def listening() -> tuple[list[str], list[str], str]:
            levels: dict[str, int] = {a: probes.get(a).listens_to(topic) for a in probes}
            best = max(levels.values(), default=0)
            known = "; ".join(
                f"'{a}' ({', '.join(repr(s) for s in probes.get(a).subscriptions) or 'no subscriptions'})"
                for a in probes
            )
            return [a for a, level in levels.items() if best and level == best], list(probes), known

        candidates, connected, known = self.call(listening)
        if len(candidates) == 1:
            return candidates[0], probes.get(candidates[0])
        if candidates:
            names = ", ".join(f"'{a}'" for a in candidates)
            raise KeywordError(
                f"Several MQTT connections are subscribed to '{topic}' ({names}); say which with alias=."
            )
        if not connected:
            raise KeywordError(
                f"No MQTT connection is subscribed to '{topic}': none is connected; use Connect To MQTT Broker "
                "and Subscribe To Topic first."
            )
        raise KeywordError(
            f"No MQTT connection is subscribed to '{topic}' (connections: {known}); use Subscribe To Topic "
            "first, or name a connection with alias=."
        )

    @keyword
    def wait_until_messages_received(
        self, topic: str, count: int = 1, timeout: timedelta | None = None, alias: str = ""
    ) -> list[ReceivedMessage]:
        """Waits until ``count`` messages arrived on the subscription ``topic``; returns them all.

        ``topic`` is a subscription of the connection, or a topic (or narrower filter) within one of its
        wildcard subscriptions: then only the messages on it count. Without ``alias`` the connection is the
        one subscribed to ``topic`` (one subscribed to ``topic`` itself before one whose wildcard covers it);
        when none, or several, are, the keyword fails and names the connections.

        Fails when fewer arrived within ``timeout``. Each message is a dictionary:

        | =Key=          | =Value=                                          |
        | ``topic``      | the topic it was published to                    |
        | ``payload``    | the payload as text (UTF-8), or hex for binary   |
        | ``qos``        | the QoS it was delivered with                    |
        | ``retain``     | whether it was a retained message                |
        | ``receivedAt`` | when it arrived (epoch seconds)                  |

        | ${msgs} =    Wait Until Messages Received    alerts/#    count=1    timeout=20s
        | ${msgs} =    Wait Until Messages Received    iotix/env/env-3/telemetry    count=5    alias=backend
        """
        alias, probe = self._listener(topic, alias)
        limit = self.timeout_or_default(timeout)
        if self.call(probe.remote_for, topic) is not None:
            return self._wait_sharded(probe, topic, count, limit)

        async def wait() -> list[ReceivedMessage]:
            messages = await probe.wait_for(topic, count, limit)
            return [cast(ReceivedMessage, m.as_dict()) for m in messages]

        received: list[ReceivedMessage] = self.call(wait, timeout=limit + 5)
        if len(received) < count:
            raise AssertionError(
                f"Expected {count} message(s) on '{topic}' (alias '{alias}') within {limit:g} s, got {len(received)}."
            )
        return received

    def _wait_sharded(self, probe: MqttProbe, topic: str, count: int, limit: float) -> list[ReceivedMessage]:
        """`Wait Until Messages Received` on a sharded subscription: counts only (messages are not kept)."""
        from iotix.cluster.receivers import ReceiverError

        async def wait() -> int:
            remote = probe.remote_for(topic)
            assert remote is not None
            loop = asyncio.get_running_loop()
            end = loop.time() + limit
            while True:
                got = await remote.count(topic)
                if got >= count or loop.time() >= end:
                    return got
                await asyncio.sleep(0.1)

        try:
            got: int = self.call_wait(wait, limit=limit)
        except ReceiverError as err:
            raise KeywordError(str(err)) from None
        if got < count:
            raise AssertionError(
                f"Expected {count} message(s) on '{topic}' (alias '{probe.alias}', sharded subscription) within "
                f"{limit:g} s, got {got}."
            )
        logger.info(
            f"{got:,} messages arrived on '{topic}' (alias '{probe.alias}'); a sharded subscription counts its "
            "messages and does not keep them, so the list returned is empty."
        )
        return []

    @keyword
    def get_received_messages(self, topic: str, alias: str = "") -> list[ReceivedMessage]:
        """Returns what arrived on the subscription ``topic`` so far (see `Wait Until Messages Received`,
        also for ``topic`` and ``alias``). A sharded subscription (``shards=`` of `Subscribe To Topic`) keeps
        no messages: the keyword fails for it."""
        alias, probe = self._listener(topic, alias)
        if self.call(probe.remote_for, topic) is not None:
            raise KeywordError(
                f"'{alias}' receives '{topic}' through a sharded subscription, which counts and tracks messages "
                "but does not keep them; use Wait Until Messages Received (counts) or Telemetry Should Be "
                "Received From Fleet, or subscribe without shards= to keep them."
            )

        def messages() -> list[ReceivedMessage]:
            return [cast(ReceivedMessage, m.as_dict()) for m in probe.messages_on(topic)]

        received: list[ReceivedMessage] = self.call(messages)
        return received

    @keyword
    def send_command_to_device(
        self, device_id: str, command: str, alias: str = DEFAULT_ALIAS, **parameters: Any
    ) -> None:
        """Publishes ``command`` to the device's command topic, with ``parameters`` as a JSON object.

        The command must be one of the device model's ``commands``. The device records it (see ``Get
        Received Commands`` of DeviceFleet), answers on the command's ``responseTopic`` and acts on
        ``reboot`` (``delayMs=...``), ``setInterval`` (``intervalMs=...``) and ``updateFirmware``
        (``version=...`` and/or ``url=...``: download progress and the result on the response topic, then a
        reboot into the new version). Parameter values are JSON when they parse as JSON (``3``, ``true``,
        ``["a"]``), else text.

        | Send Command To Device    gw-0    reboot    delayMs=500
        | Send Command To Device    sensor-3    setInterval    intervalMs=500
        | Send Command To Device    gw-0    updateFirmware    version=3.2.0    url=https://fw.example/gw.bin
        """

        def command_topics() -> tuple[str, dict[str, str]]:
            device = self.simulator.find_device(device_id)
            return device.fleet.model.id, device.fleet.transport.command_topics(device)

        model_id, topics = self.call(command_topics)
        if command not in topics:
            known = ", ".join(topics) or "none"
            raise KeywordError(
                f"Device '{device_id}' (model '{model_id}') has no command '{command}'; its commands: {known}."
            )
        params = {k: _jsonable(v) for k, v in parameters.items()}
        self.publish_mqtt_message(topics[command], json.dumps(params), qos=1, alias=alias)
        logger.info(f"Sent '{command}' {params} to {device_id} on {topics[command]}.")


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
