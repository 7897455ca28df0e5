"""tools/system-packages.sh, which make demo and make test run first, on a PATH of the test's own.

Nothing is removed from or installed on this machine: each test gives the script a folder of stub programs as
its whole PATH (the script uses only bash builtins until it calls apt-get), no sbin folders, and a venv folder
that exists; a stub ``apt-get`` shows what the script would install as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "system-packages.sh"
BASH = shutil.which("bash") or "/bin/bash"
TEST_PROGRAMS = (
    "mosquitto",
    "mosquitto_passwd",
    "mosquitto_sub",
    "mosquitto_pub",
    "victoria-metrics",
    "prometheus",
    "chromium",
    "coap-client-notls",
)
#: The programs of the packages that the missing-package tests leave out (everything but the first three).
METRICS_PROGRAMS = ("victoria-metrics", "prometheus", "chromium")
is_root = os.geteuid() == 0


def stub(folder: Path, name: str, body: str = "exit 0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{BASH}\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def run(target: str, bin_dir: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    stub(venv / "bin", "python")  # the venv exists: python3-venv is not needed
    base = {"PATH": str(bin_dir), "IOTIX_SBIN_PATH": "", "VENV": str(venv), "HOME": str(tmp_path)}
    return subprocess.run(
        [BASH, str(SCRIPT), target], env={**base, **env}, capture_output=True, text=True, timeout=30, check=False
    )


def test_with_every_program_there_it_exits_0_and_says_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    for name in (*TEST_PROGRAMS, "make"):
        stub(bin_dir, name)
    for target in ("test", "demo", "make"):
        done = run(target, bin_dir, tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), target


def test_missing_programs_stop_it_with_one_message_naming_each_package_and_the_install_command(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    for name in ("mosquitto_sub", "mosquitto_pub", *METRICS_PROGRAMS):
        stub(bin_dir, name)
    done = run("test", bin_dir, tmp_path, IOTIX_APT="no")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "make test cannot run: 2 system package(s) missing (not installed automatically: IOTIX_APT=no)."
    )
    assert lines[1].split()[:4] == ["mosquitto", "for", "mosquitto,", "mosquitto_passwd:"]
    assert lines[2].split()[:3] == ["libcoap3-bin", "for", "coap-client-notls:"]
    sudo = "" if is_root else "sudo "
    assert lines[4] == (
        f"  {sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends mosquitto libcoap3-bin"
    )
    assert "mosquitto-clients" not in done.stderr  # present programs are not named
    assert done.stderr.count("cannot run") == 1


def test_the_demo_needs_only_the_broker_and_the_metrics_store(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "coap-client-notls")
    stub(bin_dir, "chromium")
    done = run("demo", bin_dir, tmp_path, IOTIX_APT="no")
    assert done.returncode == 1
    assert done.stderr.startswith("make demo cannot run: 2 system package(s) missing")
    assert done.stderr.rstrip().splitlines()[-2].endswith("--no-install-recommends mosquitto victoria-metrics")


def test_a_daemon_in_an_sbin_folder_counts_as_there(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    for name in TEST_PROGRAMS[1:]:
        stub(bin_dir, name)
    stub(tmp_path / "sbin", "mosquitto")
    done = run("test", bin_dir, tmp_path, IOTIX_SBIN_PATH=str(tmp_path / "sbin"), IOTIX_APT="no")
    assert (done.returncode, done.stderr) == (0, "")


def test_a_python_without_venv_names_python3_venv_until_the_venv_exists(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    for name in TEST_PROGRAMS:
        stub(bin_dir, name)
    stub(bin_dir, "python3", "exit 1")  # `python3 -c 'import ensurepip, venv'` fails, as without python3-venv
    done = run("test", bin_dir, tmp_path, VENV=str(tmp_path / "no-venv-yet"), IOTIX_APT="no")
    assert done.returncode == 1
    assert "python3-venv       for python3 -m venv:" in done.stderr
    assert (
        done.stderr.count("apt-get install") == 1 and "install -y --no-install-recommends python3-venv" in done.stderr
    )
    assert run("test", bin_dir, tmp_path, IOTIX_APT="no").returncode == 0  # the venv exists


def test_without_apt_get_it_says_so(tmp_path: Path) -> None:
    done = run("test", tmp_path / "empty", tmp_path)
    assert done.returncode == 1
    reason = "there is no apt-get here" if is_root else "installing needs root"
    assert done.stderr.splitlines()[0].endswith(f"(not installed automatically: {reason}).")


@pytest.mark.skipif(not is_root, reason="installing with apt-get is what the script does as root only")
def test_as_root_it_installs_the_missing_packages_with_apt_get(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "apt-calls"
    # The stub apt-get records its arguments and, on install, provides the programs the packages have.
    stub(
        bin_dir,
        "apt-get",
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = install ]; then for p in {" ".join(TEST_PROGRAMS)}; do\n'
        f'  printf "#!{BASH}\\n" > {bin_dir}/$p; /bin/chmod 755 {bin_dir}/$p; done; fi',
    )
    done = run("test", bin_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    packages = "mosquitto mosquitto-clients libcoap3-bin victoria-metrics prometheus chromium"
    assert calls.read_text().splitlines() == ["update -qq", f"install -y -qq --no-install-recommends {packages}"]
    assert done.stderr == f"make test: installing the missing system packages with apt-get: {packages}\n"


@pytest.mark.skipif(not is_root, reason="installing with apt-get is what the script does as root only")
def test_as_root_a_package_apt_get_did_not_provide_still_stops_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "apt-get")  # succeeds, installs nothing
    for name in TEST_PROGRAMS[:-1]:
        stub(bin_dir, name)
    done = run("test", bin_dir, tmp_path)
    assert done.returncode == 1
    assert "make test cannot run: 1 system package(s) missing (still missing after apt-get install)." in done.stderr
    assert "libcoap3-bin       for coap-client-notls:" in done.stderr


def make_dry_run(target: str) -> list[str]:
    """The commands ``make -n TARGET`` would run (in a make of its own: not the make that runs pytest)."""
    make = shutil.which("make")
    assert make is not None
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(
        [make, "-n", "--no-print-directory", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dry.stdout.splitlines()


def test_make_demo_and_make_test_check_the_packages_before_anything_else() -> None:
    for target in ("demo", "test"):
        first = make_dry_run(target)[0]
        assert first.endswith(f"bash tools/system-packages.sh {target}"), first
    assert any("robot --dryrun" in line for line in make_dry_run("test"))


def test_ci_runs_exactly_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands == [
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        "bash tools/system-packages.sh make",  # make itself, before make can run
        "exec make test",
    ]
