"""Robot Framework keyword library: talk to brokers and servers as a test client, and check what arrived."""

from __future__ import annotations

from datetime import timedelta

from iotix._robot.coap_keywords import COAP_RECEIVERS, CoapKeywords
from iotix._robot.iotflow_keywords import IOTFLOW_RECEIVERS, IoTFlowKeywords
from iotix._robot.kafka_keywords import KAFKA_RECEIVERS, KafkaKeywords
from iotix._robot.library import IoTixLibrary
from iotix._robot.mqtt_keywords import MQTT_RECEIVERS, MqttBrokerKeywords, MqttClientKeywords
from iotix._robot.telemetry import TelemetryKeywords

__version__ = "0.1.0"

#: The end of the message for a ``source=`` that names no receiver.
UNKNOWN_RECEIVER_HINT = (
    "connect and subscribe an MQTT receiver, start a local CoAP server or IoTFlow backend, observe a resource, "
    "or subscribe to a Kafka topic."
)


class ProtocolClient(IoTixLibrary):
    """Test-side clients: local brokers to run against, and connections that subscribe, publish and check.

    = Receivers and aliases =

    `Connect To MQTT Broker` opens a connection under an ``alias`` (``default`` unless given). From
    `Subscribe To Topic` on, everything that arrives on the subscription is collected in the background:
    `Wait Until Messages Received` and `Get Received Messages` read it, and every IoTix telemetry
    envelope (``deviceId``, ``seq``, ``ts``) is counted per device, so that
    `Telemetry Should Be Received From Fleet` can tell what was lost, duplicated or reordered.

    Every receiver of telemetry has a name, the ``source`` of `Telemetry Should Be Received From Fleet`
    and of the Metrics keywords:

    | =Receiver=          | =Opened by=                                     | =Default receiver of=          |
    | ``<alias>``         | `Connect To MQTT Broker`, `Subscribe To Topic`   | MQTT fleets (1)                |
    | ``coap``            | `Start Local CoAP Server`                       | CoAP fleets                    |
    | ``observe:<alias>`` | `Observe CoAP Resource`                         | CoAP fleets (2)                |
    | ``iotflow``         | `Start Local IoTFlow Backend`                   | IoTFlow fleets sending by HTTP |
    | ``kafka:<alias>``   | `Connect To Kafka`, `Subscribe To Kafka Topic`  | Kafka fleets (3)               |

    (1) the connection ``default``, else the only one; (2) without a local CoAP server, the only observation;
    (3) the only Kafka connection subscribed to the fleet's topic.

    Aliases are exact (``Default`` is not ``default``); an alias is used once until its connection is
    closed. A keyword that takes an alias fails with the aliases there are when it names none of them.
    `Wait Until Messages Received` and `Get Received Messages` without an alias read the one connection
    subscribed to their topic (itself, else within a wildcard subscription) and name the candidates when
    there are several.

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

    = Timeouts =

    Keywords that wait or make a request take a ``timeout`` (``10s``, ``1 min``). Left out, it is the
    library's ``timeout``, an import argument: 10 seconds unless set when the library is imported (see
    `Importing`). `Telemetry Should Be Received From Fleet` (30 s), `Connect To Kafka` (5 s) and
    `Subscribe To Kafka Topic` (30 s) keep defaults of their own, since a consumer group's join or a whole
    fleet's telemetry takes longer than one message.
    """

    def __init__(self, timeout: timedelta = timedelta(seconds=10)) -> None:
        """``timeout`` is how long keywords wait when their own ``timeout`` is not given (default 10 seconds).

        | Library    iotix.ProtocolClient    timeout=1 min
        """
        super().__init__(
            [
                MqttBrokerKeywords(self),
                MqttClientKeywords(self),
                TelemetryKeywords(self),
                CoapKeywords(self),
                IoTFlowKeywords(self),
                KafkaKeywords(self),
            ],
            timeout=timeout,
        )
        receivers = self.context.receivers
        receivers.unknown_hint = UNKNOWN_RECEIVER_HINT
        for kind in (MQTT_RECEIVERS, COAP_RECEIVERS, IOTFLOW_RECEIVERS, KAFKA_RECEIVERS):  # listed in this order
            receivers.add_kind(kind)
