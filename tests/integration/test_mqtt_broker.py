"""Real MQTT brokers from iotix.services, checked with the independent mosquitto_pub and mosquitto_sub."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import process_gone

from iotix.errors import ConfigurationError, IoTixError
from iotix.services import (
    INSTALL_HINT,
    ManagedProcess,
    MqttBroker,
    ProcessStartError,
    available_broker_kinds,
    find_mosquitto,
    live_processes,
    pick_free_port,
    start_local_broker,
)
from iotix.services import mqtt_broker as broker_module
from iotix.services import process as process_module
from iotix.services.mqtt_broker import amqtt_config, mosquitto_config

pytestmark = pytest.mark.integration

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
needs_clients = pytest.mark.skipif(
    not (MOSQUITTO_PUB and MOSQUITTO_SUB), reason="mosquitto_pub/mosquitto_sub not installed"
)
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


def require(kind: str) -> None:
    """Skip the test when broker ``kind`` cannot be run here."""
    if kind not in available_broker_kinds():
        pytest.skip(f"{kind} broker not installed")


def roundtrip(broker: MqttBroker, payload: str | None = None, timeout: float = 10.0) -> str:
    """Subscribe with mosquitto_sub (QoS 1, first message), publish QoS 1 until it arrives; return it."""
    assert MOSQUITTO_PUB and MOSQUITTO_SUB
    topic = f"iotix/test/{uuid.uuid4().hex}"
    payload = payload or f"hello {uuid.uuid4().hex}"
    address = ["-h", broker.host, "-p", str(broker.port)]
    subscriber = subprocess.Popen(
        [MOSQUITTO_SUB, *address, "-t", topic, "-q", "1", "-C", "1", "-W", str(int(timeout))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while subscriber.poll() is None and time.monotonic() < deadline:
            subprocess.run(
                [MOSQUITTO_PUB, *address, "-t", topic, "-q", "1", "-m", payload],
                check=True,
                timeout=timeout,
                capture_output=True,
            )
            time.sleep(0.2)  # the subscription may not be in place yet: publish again
        out, err = subscriber.communicate(timeout=timeout)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    assert subscriber.returncode == 0, f"mosquitto_sub failed ({subscriber.returncode}): {err}"
    return out.strip()


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    leftovers = live_processes()
    for process in leftovers:
        process.stop()
    assert not leftovers, f"test left processes running: {leftovers}"


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MqttBroker]:
    """A started broker of each kind (skipped when not installed), stopped afterwards."""
    require(request.param)
    started = MqttBroker(request.param, workdir=tmp_path).start()
    yield started
    started.stop()


# ------------------------------------------------------------------------------------------ real brokers


@needs_clients
def test_qos1_message_is_relayed(broker: MqttBroker) -> None:
    assert broker.is_running
    assert roundtrip(broker, "qos1 payload") == "qos1 payload"


def test_info_and_properties(broker: MqttBroker) -> None:
    assert broker.host == "127.0.0.1"
    assert broker.port > 0
    assert broker.info() == {
        "host": "127.0.0.1",
        "port": broker.port,
        "kind": broker.kind,
        "url": f"mqtt://127.0.0.1:{broker.port}",
    }
    assert broker.log_path.exists()
    assert broker.config_path.stat().st_mode & 0o777 == 0o644
    assert broker.config_path.parent.stat().st_mode & 0o777 == 0o755


@needs_clients
def test_restart_keeps_the_port_and_works_again(broker: MqttBroker) -> None:
    port, pid = broker.port, broker.pid
    assert pid is not None
    started = time.monotonic()
    broker.restart(down_for=0.5)
    assert time.monotonic() - started >= 0.5
    assert broker.port == port
    assert broker.pid != pid
    assert process_gone(pid)
    assert roundtrip(broker, "after restart") == "after restart"


@needs_clients
def test_restart_while_a_client_is_connected(broker: MqttBroker) -> None:
    """An open connection when the broker goes down must not keep the port from being reused."""
    with socket.create_connection((broker.host, broker.port)):
        broker.restart(down_for=0.1)
    assert roundtrip(broker).startswith("hello")


def test_stop_leaves_no_process(broker: MqttBroker) -> None:
    pid = broker.pid
    assert pid is not None
    broker.stop()
    assert not broker.is_running
    assert process_gone(pid)
    assert broker.pid == pid
    broker.stop()  # idempotent
    with socket.socket() as probe:
        probe.bind((broker.host, broker.port))  # the port is free again


def test_two_brokers_started_at_once_get_different_ports(tmp_path: Path) -> None:
    kinds = available_broker_kinds()
    if not kinds:
        pytest.skip("no broker installed")
    kind = kinds[0]
    with ThreadPoolExecutor(max_workers=4) as pool:
        brokers = list(pool.map(lambda _: MqttBroker(kind, workdir=tmp_path).start(), range(4)))
    try:
        assert len({b.port for b in brokers}) == 4
        assert all(b.is_running for b in brokers)
    finally:
        for b in brokers:
            b.stop()


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_brokers_in_separate_processes_get_different_ports(kind: str) -> None:
    """Like pabot: several Python processes start brokers at the same moment."""
    require(kind)
    script = textwrap.dedent(
        f"""
        import sys
        from iotix.services import start_local_broker
        broker = start_local_broker({kind!r})
        print(broker.port, flush=True)
        sys.stdin.read()
        broker.stop()
        """
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        ports = [int(worker.stdout.readline()) for worker in workers if worker.stdout]
    finally:
        for worker in workers:
            worker.communicate(timeout=20)
    assert len(set(ports)) == 4
    assert all(worker.returncode == 0 for worker in workers)


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_port_taken_in_between_is_retried_with_a_new_port(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race with another pabot process: the picked port is bound by someone else before the broker."""
    require(kind)
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        stolen = thief.getsockname()[1]
        offered = iter([stolen])
        real_pick = process_module.pick_free_port
        monkeypatch.setattr(
            process_module, "pick_free_port", lambda host="127.0.0.1": next(offered, None) or real_pick(host)
        )
        broker = MqttBroker(kind, workdir=tmp_path).start()
    try:
        assert broker.port != stolen
        assert "already in use" in broker.log_path.read_text().lower()
    finally:
        broker.stop()


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_fixed_port_is_used(kind: str, tmp_path: Path) -> None:
    require(kind)
    port = pick_free_port()
    with MqttBroker(kind, port=port, workdir=tmp_path) as broker:
        assert broker.port == port
        assert broker.is_running
    assert not broker.is_running


# ---------------------------------------------------------------------------------- failures, selection


@needs_mosquitto
def test_broken_config_reports_the_log_tail(tmp_path: Path) -> None:
    mosquitto = find_mosquitto()
    assert mosquitto
    config = tmp_path / "broken.conf"
    config.write_text("listener 1883 127.0.0.1\nthis_is_not_an_option true\n")
    process = ManagedProcess([mosquitto, "-c", str(config)], pick_free_port(), log_dir=tmp_path)
    with pytest.raises(IoTixError) as caught:
        process.start()
    message = str(caught.value)
    assert isinstance(caught.value, ProcessStartError)
    assert "exited during startup" in message
    assert mosquitto in message and str(config) in message
    assert "Exit code: 3" in message
    assert "this_is_not_an_option" in message
    assert not process.is_running


def test_auto_prefers_mosquitto(tmp_path: Path) -> None:
    kinds = available_broker_kinds()
    if not kinds:
        pytest.skip("no broker installed")
    with start_local_broker(workdir=tmp_path) as broker:
        assert broker.kind == kinds[0]
        assert broker.is_running


def test_auto_falls_back_to_amqtt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("amqtt")
    monkeypatch.setattr(broker_module, "find_mosquitto", lambda: None)
    with start_local_broker("auto", workdir=tmp_path) as broker:
        assert broker.kind == "amqtt"


def test_no_broker_available_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "find_mosquitto", lambda: None)
    monkeypatch.setattr(broker_module, "amqtt_command", lambda: None)
    with pytest.raises(IoTixError, match="apt-get install mosquitto") as caught:
        start_local_broker()
    assert "robotframework-iotix[embedded]" in str(caught.value)
    with pytest.raises(IoTixError, match=r"robotframework-iotix\[embedded\]"):
        start_local_broker("mosquitto")


def test_unknown_kind_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="use one of mosquitto, amqtt"):
        start_local_broker("hivemq")
    with pytest.raises(ConfigurationError):
        MqttBroker("mosquitto", port=70000)


def test_mosquitto_config_is_the_infra_settings() -> None:
    assert mosquitto_config(18830).splitlines() == [
        "listener 18830 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "log_dest stderr",
        "max_connections -1",
        "max_queued_messages 0",
        "max_inflight_messages 1000",
        "sys_interval 1",
    ]


def test_amqtt_config_is_valid_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(amqtt_config(18830))
    assert config["listeners"] == {"default": {"type": "tcp", "bind": "127.0.0.1:18830"}}
    assert config["plugins"]["amqtt.plugins.authentication.AnonymousAuthPlugin"] == {"allow_anonymous": True}
    assert INSTALL_HINT.startswith("install Mosquitto")
