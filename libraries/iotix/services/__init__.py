"""Real servers on 127.0.0.1 for demos and tests, started and stopped from Python.

Every server runs as a :class:`ManagedProcess`: its own process group, output in a log file, stopped at exit.
"""

from iotix.services.iotflow import IoTFlowBackend, start_iotflow_backend
from iotix.services.kafka_broker import KafkaBroker, find_tansu, start_local_kafka_broker
from iotix.services.mqtt_broker import (
    BROKER_KINDS,
    INSTALL_HINT,
    MqttBroker,
    amqtt_command,
    available_broker_kinds,
    find_mosquitto,
    start_local_broker,
)
from iotix.services.process import (
    LOCALHOST,
    ManagedProcess,
    ProcessStartError,
    group_listens_on,
    live_processes,
    pick_free_port,
    pick_port_candidates,
    port_accepts,
    start_with_port_retry,
    stop_all,
)
from iotix.services.victoria import (
    VICTORIA_INSTALL_HINT,
    MetricsStore,
    MetricsStoreError,
    find_victoria_metrics,
    start_local_metrics_store,
)

__all__ = [
    "BROKER_KINDS",
    "INSTALL_HINT",
    "LOCALHOST",
    "VICTORIA_INSTALL_HINT",
    "IoTFlowBackend",
    "KafkaBroker",
    "ManagedProcess",
    "MetricsStore",
    "MetricsStoreError",
    "MqttBroker",
    "ProcessStartError",
    "amqtt_command",
    "available_broker_kinds",
    "find_mosquitto",
    "find_tansu",
    "find_victoria_metrics",
    "group_listens_on",
    "live_processes",
    "pick_free_port",
    "pick_port_candidates",
    "port_accepts",
    "start_iotflow_backend",
    "start_local_broker",
    "start_local_kafka_broker",
    "start_local_metrics_store",
    "start_with_port_retry",
    "stop_all",
]
