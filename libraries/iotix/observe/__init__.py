"""Counters, latency histograms and the telemetry tracker (what arrived, per device)."""

from iotix.observe.histogram import Histogram
from iotix.observe.tracker import DeviceTrack, TelemetryReport, TelemetryTracker

__all__ = ["DeviceTrack", "Histogram", "TelemetryReport", "TelemetryTracker"]
