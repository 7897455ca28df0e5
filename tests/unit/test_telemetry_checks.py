"""`Telemetry Should Be Received From Fleet`'s verdict on a report: loss, duplicates and reordering.

``describe_failure`` is the pure part of the keyword: given what a tracker saw, it says whether the check
passes and, when not, why, naming the fleet, the figures and the worst devices.
"""

from __future__ import annotations

from iotix._robot.telemetry import describe_failure
from iotix.observe.tracker import TelemetryReport, TelemetryTracker


def _report(feed: dict[str, list[int]], sent: dict[str, int]) -> TelemetryReport:
    """What a tracker reports after receiving ``feed`` (device -> seqs in arrival order); ``sent``: [0, n)."""
    tracker = TelemetryTracker("t")
    for device, seqs in feed.items():
        for seq in seqs:
            tracker.record(device, seq, None)
    return tracker.report({device: (0, n) for device, n in sent.items()})


def test_a_clean_report_passes() -> None:
    report = _report({"a": [0, 1, 2], "b": [0, 1, 2]}, {"a": 3, "b": 3})
    assert describe_failure("f", report, 0.0, 1, "r") is None
    assert describe_failure("f", report, 0.0, 1, "r", max_duplicates=0, in_order=True) is None


def test_one_duplicate_fails_by_default_and_names_the_device() -> None:
    report = _report({"a": [0, 1, 1, 2], "b": [0, 1, 2]}, {"a": 3, "b": 3})
    assert report.duplicates == 1 and report.lost == 0
    message = describe_failure("env", report, 0.0, 1, "default")
    assert message == (
        "Fleet 'env': 1 duplicate message arrived, more than the allowed 0 (max_duplicates); most on a (1) "
        "[receiver 'default']."
    )


def test_duplicates_up_to_max_duplicates_pass() -> None:
    report = _report({"a": [0, 0, 1, 1, 2], "b": [0, 1, 2, 2]}, {"a": 3, "b": 3})
    assert report.duplicates == 3
    assert describe_failure("env", report, 0.0, 1, "r", max_duplicates=3) is None
    message = describe_failure("env", report, 0.0, 1, "r", max_duplicates=2)
    assert message is not None
    assert "3 duplicate messages arrived, more than the allowed 2 (max_duplicates); most on a (2), b (1)" in message


def test_the_worst_devices_are_named_first_and_the_rest_counted() -> None:
    feed = {f"d{i}": [0] * (i + 2) for i in range(5)}  # d{i} has i+1 duplicates
    report = _report(feed, {d: 1 for d in feed})
    message = describe_failure("env", report, 0.0, 1, "r")
    assert message is not None
    assert "most on d4 (5), d3 (4), d2 (3) and 2 more" in message


def test_reordering_passes_unless_in_order_is_asked() -> None:
    report = _report({"a": [0, 2, 1, 3], "b": [1, 0, 3, 2]}, {"a": 4, "b": 4})
    assert report.out_of_order == 3 and report.lost == 0 and report.duplicates == 0
    assert describe_failure("env", report, 0.0, 1, "r") is None
    message = describe_failure("env", report, 0.0, 1, "r", in_order=True)
    assert message == (
        "Fleet 'env': 3 messages arrived after a later one of the same device, none allowed (in_order=True); "
        "most on b (2), a (1) [receiver 'r']."
    )


def test_every_problem_is_listed_in_one_message() -> None:
    report = _report({"a": [1, 0, 0], "b": []}, {"a": 3, "b": 2})
    message = describe_failure("env", report, 0.0, 1, "r", in_order=True)
    assert message is not None
    assert message.startswith("Fleet 'env' lost 3 of 5 messages (60.00 %), more than the allowed 0 %")
    assert "1 duplicate message arrived, more than the allowed 0 (max_duplicates); most on a (1)" in message
    assert "1 message arrived after a later one of the same device, none allowed (in_order=True)" in message
    assert message.endswith("(1 devices silent) [receiver 'r'].")


def test_allowed_duplicates_are_still_mentioned_when_the_check_fails_for_loss() -> None:
    report = _report({"a": [0, 0], "b": []}, {"a": 1, "b": 1})
    message = describe_failure("env", report, 0.0, 0, "r", max_duplicates=5)
    assert message is not None
    assert "(1 duplicates, 1 devices silent)" in message
