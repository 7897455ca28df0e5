"""TypedDicts of the dictionaries keywords return, so that libdoc documents their keys.

As Browser does (``utils/data_types.py``), a keyword that returns a dictionary is annotated with one of
these, and its docstring tables the keys. The dictionaries are plain ``dict``s at run time (``${d}[key]``).
Keys that only some values have are in a ``total=False`` subclass.
"""

# No `from __future__ import annotations` here: libdoc reads these annotations at run time.

from typing import Any, NotRequired, TypedDict


class LatencySummary(TypedDict):
    """A latency histogram in milliseconds; every figure but ``count`` is None while it is empty."""

    count: int
    min: float | None
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


class ShardInfo(TypedDict):
    """One shard of a sharded fleet (``shards`` in `Get Fleet Stats`)."""

    index: int
    first: str
    last: str
    count: int
    pid: int | None
    alive: bool
    state: str


class FleetStats(TypedDict):
    """The counters of a fleet (`Get Fleet Stats`)."""

    fleet: str
    model: str
    protocol: str
    target: str
    state: str
    deviceCount: int
    runningDeviceCount: int
    launchedDeviceCount: int
    states: dict[str, int]
    messagesSent: int
    messagesAcked: int
    messagesFailed: int
    messagesDropped: int
    messagesQueued: int
    bytesSent: int
    connects: int
    disconnects: int
    reconnects: int
    connectFailures: int
    commandsReceived: int
    behaviorsFired: int
    dropoutStepsDone: int
    dropoutSteps: int
    circuitState: str
    circuitOpens: int
    retries: int
    failuresByReason: dict[str, int]
    devicesEnteredError: int
    devicesRecovered: int
    sendLatenessMs: LatencySummary
    transport: dict[str, Any]
    shards: NotRequired[list[ShardInfo]]


class _DeviceStatus(TypedDict):
    deviceId: str
    fleet: str
    index: int
    state: str
    messagesSent: int
    messagesAcked: int
    messagesFailed: int
    messagesDropped: int
    messagesQueued: int
    retries: int
    bytesSent: int
    connects: int
    disconnects: int
    reconnects: int
    connectFailures: int
    nextSeq: int
    lastError: str | None
    commandsReceived: int
    firmwareVersion: str | None


class DeviceStatus(_DeviceStatus, total=False):
    """One device's state and counters (`Get Device Status`); a CoAP device in server mode adds ``port``
    and ``url``."""

    port: int
    url: str


class TransmissionLogEntry(TypedDict):
    """One transmission of a device (`Get Transmission Log`)."""

    time: str
    bytes: int
    result: str
    latencyMs: float | None
    error: str | None


class ReceivedCommand(TypedDict):
    """A command a device received (`Get Received Commands`)."""

    command: str
    parameters: dict[str, Any]
    topic: str
    receivedAt: str
    status: str
    detail: str


class DeviceCertificates(TypedDict):
    """Where `Create Device Certificates` wrote the devices' certificates."""

    directory: str
    count: int
    caFile: str


class DeviceLoss(TypedDict):
    """What one device lost on the way (an item of a telemetry report's ``worstDevices``)."""

    deviceId: str
    lost: int
    received: int
    expected: int
    duplicates: int
    firstMissing: list[int]


class TelemetryReport(TypedDict):
    """What arrived from a fleet at a receiver (`Get Telemetry Report`)."""

    devices: int
    expected: int
    received: int
    lost: int
    lossPercent: float
    duplicates: int
    outOfOrder: int
    silentDevices: int
    invalidMessages: int
    latencyMs: LatencySummary
    worstDevices: list[DeviceLoss]


class ServerAddress(TypedDict):
    """Where a local server listens."""

    host: str
    port: int
    url: str


class _BrokerAddress(ServerAddress):
    kind: str


class BrokerAddress(_BrokerAddress, total=False):
    """Where a local MQTT broker listens; a TLS broker adds ``tls``, ``ca``, ``caDir``, ``clientCert`` and
    ``clientKey``."""

    tls: bool
    ca: str
    caDir: str
    clientCert: str
    clientKey: str


class _KafkaBrokerAddress(ServerAddress):
    bootstrap: str


class KafkaBrokerAddress(_KafkaBrokerAddress, total=False):
    """Where a local Kafka broker listens; ``bootstrap`` is ``host:port`` for clients. A secured broker adds
    ``securityProtocol``; with TLS ``ca``, ``caDir`` (and ``clientCert``/``clientKey`` when it requires client
    certificates); with SASL ``saslMechanisms`` and ``saslUsername``."""

    securityProtocol: str
    ca: str
    caDir: str
    clientCert: str
    clientKey: str
    saslMechanisms: list[str]
    saslUsername: str


class ReceivedMessage(TypedDict):
    """A message a test receiver got (UTF-8 text, else hex)."""

    topic: str
    payload: str
    qos: int
    retain: bool
    receivedAt: float


# -- ProtocolClient: CoAP, IoTFlow, Kafka -----------------------------------------------------------------


class CoapResponse(TypedDict):
    """The response to a CoAP request (`CoAP GET`, `CoAP POST`, `CoAP PUT`)."""

    code: str
    payload: str
    ok: bool


class CoapNotification(CoapResponse):
    """A notification of an observed CoAP resource (`Wait Until CoAP Notifications Received`)."""

    time: float


class CoapRequest(TypedDict):
    """A request the local CoAP server recorded (`Get CoAP Requests Received`)."""

    path: str
    method: str
    payload: str
    contentFormat: int | None
    deviceId: str | None
    time: float


class IoTFlowBackendAddress(ServerAddress):
    """Where the local IoTFlow backend listens, its admin token and its database file."""

    admin_token: str
    db_path: str


class KafkaProduced(TypedDict):
    """Where a produced Kafka record went (`Produce Kafka Message`)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class KafkaMessage(TypedDict):
    """A record a Kafka subscription received (`Get Kafka Messages`)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    timestamp: int
    receivedAt: float


class NetworkFault(TypedDict):
    """A network fault and what it did so far (`Get Network Faults`)."""

    name: str
    kind: str
    direction: str
    summary: str
    settings: dict[str, Any]
    devices: int | str
    toxicity: float
    duration_s: float | None
    active_for_s: float
    packets_delayed: int
    bytes_delayed: int
    packets_dropped: int
    bytes_dropped: int
    packets_duplicated: int
    packets_corrupted: int
    packets_reordered: int
    bytes_held: int
    connections_affected: int
    connections_reset: int
    connections_closed: int
    connections_refused: int


class FaultProxy(TypedDict):
    """A standalone network fault proxy (`Start Network Fault Proxy`)."""

    name: str
    host: str
    port: int
    protocol: str
    upstream: str
