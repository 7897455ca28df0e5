"""docs/network-faults.md tells the truth: its profile table is the one the code applies, and it documents every
kind the engine accepts."""

from __future__ import annotations

from pathlib import Path

from iotix.fault.profiles import profiles_table
from iotix.fault.spec import KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "network-faults.md"


def test_the_profile_table_is_generated_from_the_profiles() -> None:
    assert profiles_table() in DOC.read_text(encoding="utf-8"), (
        "docs/network-faults.md is out of date: paste iotix.fault.profiles.profiles_table() into it"
    )


def test_every_kind_has_a_row() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [kind for kind in KINDS if kind != "mqtt" and f"| `{kind}` |" not in text]
    assert not missing, f"kinds without a row in docs/network-faults.md: {missing}"
