"""``iotix validate`` checks scenario files too: their schema, and their models among those of the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotix.cli import main
from iotix.model.loader import model_files

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SCENARIOS = MODELS / "scenarios"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_the_shipped_models_and_scenarios_validate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "validate", str(MODELS), str(SCENARIOS))
    assert code == 0, out
    models = len(list(model_files(MODELS)))
    for name, fleets, devices in [("custom", 2, 5), ("factory", 5, 30), ("home", 5, 9), ("office", 5, 16)]:
        assert f"ok  {SCENARIOS / name}.yaml  (scenario {name}, {fleets} fleets, {devices} devices)" in out
    assert out.splitlines()[-1] == f"{models} model files and 4 scenario files checked: {models + 4} valid, 0 invalid"


def test_a_models_folder_alone_leaves_its_scenarios_out(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "validate", str(MODELS))
    assert code == 0
    assert "scenario" not in out


def test_a_broken_scenario_is_reported_with_its_paths(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("fleets:\n  - {model: thermostat, count: 0}\n  - {model: nowhere.yaml, count: 1}\n", "utf-8")
    code, out = run(capsys, "validate", str(bad))
    assert code == 1
    assert out.splitlines()[:3] == [
        f"Scenario '{bad}' is invalid (2 problems):",
        "  - fleets[0].count: must be >= 1, got 0",
        f"  - fleets[1].model: model file '{tmp_path / 'nowhere.yaml'}' not found (relative to the scenario's "
        f"folder '{tmp_path}')",
    ]
    assert out.splitlines()[-1] == "1 scenario file checked: 0 valid, 1 invalid"


def test_model_ids_are_looked_up_among_the_models_of_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("fleets:\n  - {model: thermostat, count: 2}\n", "utf-8")
    code, out = run(capsys, "validate", str(site))
    assert code == 1
    assert "  - fleets[0].model: No device model with id 'thermostat' (known: none loaded)" in out
    assert f"(model ids are looked up in the paths given: iotix validate MODELS-FOLDER {site})" in out
    code, out = run(capsys, "validate", str(site), str(MODELS / "thermostat.yaml"))
    assert code == 0, out
    assert f"ok  {site}  (scenario site, 1 fleet, 2 devices)" in out
