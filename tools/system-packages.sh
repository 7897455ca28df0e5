#!/usr/bin/env bash
# The system packages that `make demo` and `make test` need: checked before anything else runs, installed with
# apt-get when this runs as root on a machine that has it, otherwise named in ONE message with the command that
# installs them, and the make target stops before any test (nothing is skipped for want of a program).
#
# Usage: tools/system-packages.sh TARGET      TARGET: demo, test, or make (make itself, for .ci/run)
#
# What each target needs (a program, the Debian package that has it, and why):
#   demo, test  mosquitto          mosquitto: the local MQTT broker, and the only one that does mutual TLS
#   test        mosquitto_passwd   mosquitto: the password file of the broker that checks Secret passwords
#   test        mosquitto_sub/pub  mosquitto-clients: an MQTT client independent of IoTix that checks what
#                                  fleets publish
#   test        coap-client-notls  libcoap3-bin: a CoAP client independent of IoTix that checks CoAP devices
#   demo, test  victoria-metrics   victoria-metrics: the local time-series store (InfluxDB write API, PromQL)
#                                  of Start Local Metrics Store, which metrics exports are checked against
#   test        prometheus         prometheus: a real Prometheus that scrapes Start Metrics Endpoint
#   test        chromium           chromium: a headless browser that loads the live dashboard and the Robot log
#   demo, test  PYTHON -m venv     python3-venv: only until VENV exists
#   make        make               make
#
# Environment (what the Makefile passes, and what the tests use to run this without removing anything):
#   PYTHON           the Python that creates the venv (default python3)
#   VENV             the venv folder (default .venv); once VENV/bin/python exists, the venv module is not needed
#   IOTIX_APT        'no': only check and say what to install, even as root (default: install when possible)
#   IOTIX_SBIN_PATH  folders searched after PATH for daemons such as mosquitto, which Debian puts in /usr/sbin,
#                    a folder that is not on a normal user's PATH (default /usr/local/sbin:/usr/sbin:/sbin)
#
# Only bash builtins are used before apt-get, so a PATH that hides programs hides them from this script too.
set -euo pipefail

target="${1:-}"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
SBIN_PATH="${IOTIX_SBIN_PATH-/usr/local/sbin:/usr/sbin:/sbin}"

case "$target" in
  demo) needs="mosquitto:mosquitto victoria-metrics:victoria-metrics python" label="make demo" ;;
  test) needs="mosquitto:mosquitto mosquitto_passwd:mosquitto mosquitto_sub:mosquitto-clients
               mosquitto_pub:mosquitto-clients coap-client-notls:libcoap3-bin victoria-metrics:victoria-metrics
               prometheus:prometheus chromium:chromium python" label="make test" ;;
  make) needs="make:make" label="make test" ;;
  *)
    echo "usage: $0 demo|test|make (the make target whose system packages to check)" >&2
    exit 2
    ;;
esac

why() {
  case "$1" in
    mosquitto) echo "the local MQTT broker of the demo and the tests, and the only one that does mutual TLS" ;;
    mosquitto-clients) echo "an MQTT client independent of IoTix that checks what fleets publish" ;;
    libcoap3-bin) echo "a CoAP client independent of IoTix that checks CoAP devices" ;;
    victoria-metrics) echo "the local time-series store that metrics exports are written to and read back from" ;;
    prometheus) echo "a real Prometheus that scrapes the metrics endpoint of the tests" ;;
    chromium) echo "a headless browser that loads the live dashboard in the tests" ;;
    python3) echo "Python 3.10 or newer, for the venv" ;;
    python3-venv) echo "'$PYTHON -m venv' creates $VENV (it needs the venv and ensurepip modules)" ;;
    make) echo "runs the Makefile" ;;
  esac
}

found() {  # found COMMAND: on PATH, or (for daemons) in the sbin folders
  local dir
  command -v "$1" >/dev/null 2>&1 && return 0
  local IFS=:
  for dir in $SBIN_PATH; do
    [ -n "$dir" ] && [ -x "$dir/$1" ] && return 0
  done
  return 1
}

missing_packages=""   # space-separated, each once
missing_programs=""   # one "package=program" line per missing program, for the message
add_missing() {  # add_missing PACKAGE PROGRAM
  case " $missing_packages " in
    *" $1 "*) ;;
    *) missing_packages="${missing_packages:+$missing_packages }$1" ;;
  esac
  missing_programs="$missing_programs$1=$2
"
}

check() {
  missing_packages=""
  missing_programs=""
  local need
  for need in $needs; do
    if [ "$need" = python ]; then
      [ -x "$VENV/bin/python" ] && continue
      if ! found "$PYTHON"; then
        add_missing python3 "$PYTHON"
        add_missing python3-venv "$PYTHON -m venv"
      elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        add_missing python3-venv "$PYTHON -m venv"
      fi
    elif ! found "${need%%:*}"; then
      add_missing "${need#*:}" "${need%%:*}"
    fi
  done
}

programs_of() {  # programs_of PACKAGE: the missing programs that PACKAGE provides, comma-separated
  local entry list=""
  while IFS= read -r entry; do
    [ "${entry%%=*}" = "$1" ] && list="${list:+$list, }${entry#*=}"
  done <<<"$missing_programs"
  echo "$list"
}

explain() {  # explain REASON: the one message, on stderr
  local pkg count sudo=""
  [ "$EUID" -ne 0 ] && sudo="sudo "
  count=0
  for pkg in $missing_packages; do count=$((count + 1)); done
  {
    echo "$label cannot run: $count system package(s) missing ($1)."
    for pkg in $missing_packages; do
      printf '  %-18s for %s: %s\n' "$pkg" "$(programs_of "$pkg")" "$(why "$pkg")"
    done
    echo "Install them (Debian, Ubuntu), then run $label again:"
    echo "  ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends $missing_packages"
    echo "Elsewhere, install the programs named above so that they are on PATH."
  } >&2
}

check
[ -z "$missing_packages" ] && exit 0

if [ "${IOTIX_APT:-yes}" = no ]; then
  explain "not installed automatically: IOTIX_APT=no"
  exit 1
elif [ "$EUID" -ne 0 ]; then
  explain "not installed automatically: installing needs root"
  exit 1
elif ! command -v apt-get >/dev/null 2>&1; then
  explain "not installed automatically: there is no apt-get here"
  exit 1
fi

echo "$label: installing the missing system packages with apt-get: $missing_packages" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # one word per package
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing_packages; } >/dev/null; then
  explain "apt-get failed; its messages are above"
  exit 1
fi
check
if [ -n "$missing_packages" ]; then
  explain "still missing after apt-get install"
  exit 1
fi
