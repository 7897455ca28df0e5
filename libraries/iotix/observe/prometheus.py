"""A Prometheus endpoint (``/metrics``) with the figures of every fleet, served by ``prometheus-client``.

The endpoint has a registry of its own (nothing of the process' default registry, such as the Python
collector, is mixed in) with one collector that reads the hub's :attr:`~iotix.observe.series.MetricsHub.published`
snapshot, which the hub replaces once a second and any thread may read. A scrape therefore never touches the
runtime loop.

Names and labels are those of the InfluxDB export (:mod:`iotix.observe.influx`), as VictoriaMetrics names them,
so one PromQL dashboard serves both. Labels ``fleet``, ``model``, ``protocol``, ``run_id`` on every series:

- counters (cumulative since the fleet was created): ``iotix_messages_sent_total``, ``iotix_messages_acked_total``,
  ``iotix_messages_failed_total``, ``iotix_messages_dropped_total``, ``iotix_retries_total``,
  ``iotix_bytes_sent_total``, ``iotix_connects_total``, ``iotix_disconnects_total``, ``iotix_reconnects_total``,
  ``iotix_connect_failures_total``, ``iotix_devices_dropped_total``, ``iotix_devices_restored_total``, and
  ``iotix_failures_total`` with a ``reason`` label;
- gauges (the last second): ``iotix_devices``, ``iotix_devices_connected``, ``iotix_devices_in_error``,
  ``iotix_messages_queued``, ``iotix_network_faults``, ``iotix_network_backlog_bytes``, and with a ``kind``
  label (``lateness``, ``request``, ``e2e``; only kinds with samples in the last second)
  ``iotix_latency_p50_seconds``, ``iotix_latency_p90_seconds``, ``iotix_latency_p99_seconds``,
  ``iotix_latency_max_seconds``, ``iotix_latency_count``.

Unlike the InfluxDB points, the series carry no ``suite`` and ``test`` labels: a scrape sees the fleets as they
are now, and a label that changes with every test would start a new series each time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iotix.errors import IoTixError
from iotix.observe.influx import (
    COUNTER_FIELDS,
    FAILURES_MEASUREMENT,
    GAUGE_FIELDS,
    LATENCY_FIELDS,
    LATENCY_MEASUREMENT,
    MEASUREMENT,
)
from iotix.observe.series import LATENCY_KEYS

__all__ = ["LABELS", "HubCollector", "MetricsEndpoint", "collect_published"]

#: The labels of every series, in this order.
LABELS = ("fleet", "model", "protocol", "run_id")

_COUNTER_HELP = {
    "sent": "Messages the fleet's devices sent.",
    "acked": "Messages the server acknowledged (QoS 1/2, HTTP 2xx, CoAP ACK, Kafka ack).",
    "failed": "Messages that failed (see iotix_failures_total for the reasons).",
    "dropped": "Messages dropped before they were sent (offline queue full, circuit open).",
    "retries": "Retries of failed sends.",
    "bytes": "Payload bytes sent.",
    "connects": "Successful connections.",
    "disconnects": "Disconnections.",
    "reconnects": "Reconnections after a lost connection.",
    "connectFailures": "Failed connection attempts.",
    "devicesDropped": "Devices dropped by a dropout.",
    "devicesRestored": "Dropped devices that came back.",
}
_GAUGE_HELP = {
    "devices": "Devices of the fleet.",
    "connected": "Devices connected (running or in error) at the end of the last second.",
    "inError": "Devices in error at the end of the last second.",
    "queued": "Messages waiting in the devices' offline queues.",
    "networkFaults": "Network faults active on the fleet.",
    "backlogBytes": "Bytes held back by network faults (bandwidth limits, partitions).",
}


class PublishedSource(Protocol):
    """What the collector reads: the hub's snapshot (safe to read from any thread)."""

    @property
    def published(self) -> Mapping[str, Mapping[str, Any]]: ...


def _label_values(entry: Mapping[str, Any], name: str) -> list[str]:
    labels = entry.get("labels") or {}
    values = {"fleet": name, **{k: str(v) for k, v in labels.items()}}
    return [values.get(key, "") for key in LABELS]


def collect_published(published: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    """The metric families of a ``hub.published`` snapshot (a pure function: no I/O, no clock)."""
    counters = {
        key: CounterMetricFamily(f"{MEASUREMENT}_{field.removesuffix('_total')}", _COUNTER_HELP[key], labels=LABELS)
        for key, field in COUNTER_FIELDS.items()
    }
    gauges = {
        key: GaugeMetricFamily(f"{MEASUREMENT}_{field}", _GAUGE_HELP[key], labels=LABELS)
        for key, field in GAUGE_FIELDS.items()
    }
    latency = {
        key: GaugeMetricFamily(
            f"{LATENCY_MEASUREMENT}_{field}",
            "Samples of the last second." if key == "count" else f"Latency {key} of the last second, seconds.",
            labels=(*LABELS, "kind"),
        )
        for key, field in LATENCY_FIELDS.items()
    }
    failures = CounterMetricFamily(f"{FAILURES_MEASUREMENT}", "Failed messages by reason.", labels=(*LABELS, "reason"))
    for name, entry in sorted(published.items()):
        values = _label_values(entry, name)
        totals = entry.get("totals") or {}
        for key, family in counters.items():
            family.add_metric(values, float(totals.get(key, 0)))
        for reason, total in sorted((entry.get("failures") or {}).items()):
            failures.add_metric([*values, str(reason)], float(total))
        row = entry.get("row")
        if not row:
            continue
        for key, family in gauges.items():
            family.add_metric(values, float(row.get(key) or 0))
        for kind, row_key in LATENCY_KEYS.items():
            summary = row.get(row_key)
            if not summary or not summary.get("count"):
                continue
            for key, family in latency.items():
                value = summary.get(key)
                if value is not None:
                    family.add_metric([*values, kind], float(value) if key == "count" else float(value) / 1000.0)
    return [*counters.values(), failures, *gauges.values(), *latency.values()]


class HubCollector(Collector):
    """A prometheus-client collector over ``source.published`` (read once per scrape)."""

    def __init__(self, source: PublishedSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from collect_published(self._source.published)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names depend on nothing; do not scrape at registration


class MetricsEndpoint:
    """An HTTP server on ``host:port`` (``port=0``: a free one) serving ``/metrics`` for Prometheus.

    It reads ``hub.published`` from its own thread; :meth:`close` stops it.
    """

    def __init__(self, hub: PublishedSource, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise IoTixError(f"The metrics endpoint's port must be 0..65535, got {port}.")
        self.host = host
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HubCollector(hub))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise IoTixError(f"Cannot start the metrics endpoint on {host}:{port}: {err.strerror or err}.") from None
        self.port = int(self._server.server_port)
        self._closed = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and join the server thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"<MetricsEndpoint {self.url} {'closed' if self._closed else 'serving'}>"
