"""The Prometheus endpoint scraped by a real Prometheus (Debian ``prometheus``) while an MQTT fleet runs
against a real Mosquitto: PromQL over the scraped series gives the fleet's configured message rate."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from harness import BrokerHarness

from iotix.observe.prometheus import MetricsEndpoint
from iotix.services import ManagedProcess, find_mosquitto, start_local_broker, start_with_port_retry

PROMETHEUS = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/sbin:/usr/local/sbin")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
    pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus is not installed (apt-get install prometheus)"),
]

INTERVAL_MS = 100  # 10 messages a second per device
DEVICES = 30
RATE = DEVICES * 1000 / INTERVAL_MS  # 300 messages a second


def model_dict() -> dict[str, Any]:
    return {
        "id": "scrape-sensor",
        "name": "scraped sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": 1883, "topicPattern": "scrape/${deviceId}", "qos": 1},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": INTERVAL_MS,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture
def h(broker: Any) -> Iterator[BrokerHarness]:
    harness = BrokerHarness(broker)
    yield harness
    harness.close()


@pytest.fixture
def endpoint(h: BrokerHarness) -> Iterator[MetricsEndpoint]:
    ep = MetricsEndpoint(h.sim.metrics)
    yield ep
    ep.close()


def start_prometheus(target: str, workdir: Path) -> ManagedProcess:
    """A Prometheus that scrapes ``target`` (host:port) every second, its data in ``workdir``."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: iotix\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n",
        encoding="utf-8",
    )

    def make(port: int) -> ManagedProcess:
        assert PROMETHEUS is not None
        return ManagedProcess(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            port,
            name="Prometheus",
            log_dir=workdir,
            ready_pattern=r"Server is ready to receive web requests",
            startup_timeout=30.0,
        )

    return start_with_port_retry(make)


def query(prometheus: ManagedProcess, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    response = requests.get(f"http://{prometheus.address}/api/v1/query", params=params, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_until_scraping(prometheus: ManagedProcess, timeout: float = 20.0) -> None:
    """Prometheus hands new targets to its scrapers after up to 5 s (its discovery update interval)."""
    end = time.monotonic() + timeout
    while not query(prometheus, 'up{job="iotix"} == 1'):
        assert time.monotonic() < end, f"Prometheus did not scrape the endpoint within {timeout:g} s"
        time.sleep(0.2)


def test_prometheus_scrapes_the_fleets_message_rate(h: BrokerHarness, endpoint: MetricsEndpoint) -> None:
    fleet = h.fleet("scraped", model_dict(), DEVICES)
    workdir = Path(tempfile.mkdtemp(prefix="iotix-prometheus-"))
    prometheus = start_prometheus(f"{endpoint.host}:{endpoint.port}", workdir)
    try:
        wait_until_scraping(prometheus)
        h.start(fleet)
        h.running(fleet)
        steady = time.time() + 1.0  # the launch's partial second is over
        time.sleep(8.0)
        promql = 'rate(iotix_messages_sent_total{fleet="scraped"}[5s])'
        rates: list[float] = []
        for at in (steady + 5.0, steady + 5.5, steady + 6.0, steady + 6.5, steady + 7.0):  # windows while it runs
            result = query(prometheus, promql, at)
            assert len(result) == 1, f"Prometheus returned {result} for {promql} at {at}"
            metric = result[0]["metric"]
            assert metric["job"] == "iotix"
            assert (metric["fleet"], metric["model"], metric["protocol"]) == ("scraped", "scrape-sensor", "mqtt")
            assert metric["run_id"] == h.sim.metrics.run_id
            rates.append(float(result[0]["value"][1]))
        # counters step once a second and scrapes sample them once a second: one 5 s window may hold one step
        # more or less than another (±25 %), the median of five is close to the configured rate
        assert statistics.median(rates) == pytest.approx(RATE, rel=0.1), rates
        assert all(RATE * 0.7 <= r <= RATE * 1.3 for r in rates), rates
        connected = query(prometheus, 'iotix_devices_connected{fleet="scraped"}')
        assert float(connected[0]["value"][1]) == DEVICES
        lateness = query(prometheus, 'iotix_latency_p99_seconds{fleet="scraped", kind="lateness"}')
        assert lateness and 0 <= float(lateness[0]["value"][1]) < 1.0
        up = query(prometheus, 'up{job="iotix"}')
        assert float(up[0]["value"][1]) == 1.0
    finally:
        prometheus.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    h.stop(fleet)
    sent = fleet.stats()["messagesSent"]
    time.sleep(1.5)  # the hub's round after the stop
    text = requests.get(endpoint.url, timeout=5).text
    labels = f'fleet="scraped",model="scrape-sensor",protocol="mqtt",run_id="{h.sim.metrics.run_id}"'
    assert f"iotix_messages_sent_total{{{labels}}} {float(sent)}" in text


def test_the_endpoint_stops_and_frees_its_port(h: BrokerHarness) -> None:
    ep = MetricsEndpoint(h.sim.metrics)
    assert requests.get(ep.url, timeout=5).status_code == 200
    ep.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(ep.url, timeout=2)
    again = MetricsEndpoint(h.sim.metrics, port=ep.port)  # the port is free again
    again.close()
