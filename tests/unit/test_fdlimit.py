"""The open-file limit: raised when the runtime starts; a fleet that cannot have its sockets is refused at once.

Limits are per process and a lowered hard limit cannot be raised again, so each check runs in a child Python
with the limits it sets itself. Nothing connects: fleets are created, never started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from iotix.fdlimit import RESERVE, too_many_message

resource = pytest.importorskip("resource")

#: Runs in a child: ``fleet(name, protocol, count)`` creates a fleet on a simulator of its own (no server, no
#: connection) and returns "ok" or the ConfigurationError's message.
PRELUDE = """
import asyncio, json, resource
from iotix.errors import ConfigurationError
from iotix.fleet.simulator import Simulator
from iotix.model.loader import load_model_dict

MODELS = {
    "mqtt": {"host": "127.0.0.1", "port": 1883, "topicPattern": "t/${deviceId}"},
    "http": {"url": "http://127.0.0.1:8080/r/${deviceId}", "flow": "generic"},
    "coap": {"host": "127.0.0.1", "port": 5683},
}

def model(protocol):
    return load_model_dict({
        "id": f"fd-{protocol}", "name": "fd", "version": "1.0.0", "type": "sensor", "protocol": protocol,
        "connection": MODELS[protocol],
        "telemetry": [
            {"name": "v", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
    })

async def fleets(plan):
    sim = Simulator(asyncio.get_running_loop())
    out = []
    for name, protocol, count in plan:
        try:
            sim.create_fleet(name, model(protocol), [f"{name}-{i}" for i in range(count)])
            out.append("ok")
        except ConfigurationError as err:
            out.append(str(err))
    await sim.shutdown()
    return out
"""


def child(code: str) -> object:
    """Run ``PRELUDE + code`` in a new Python; ``code`` prints one JSON value, which is returned."""
    program = PRELUDE + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_message_names_both_numbers_and_what_to_do() -> None:
    message = too_many_message("big", 3000, 3000, in_use=40, pending=200, soft=2048, hard=2048)
    total = 3000 + 40 + 200 + RESERVE
    assert message.startswith("Fleet 'big': its 3,000 devices need 3,000 file descriptors (sockets); with 40 already ")
    assert f"this process would need {total:,}, but it can have at most 2,048 open files (its hard limit)." in message
    assert "200 for fleets created but not started yet" in message
    assert "`ulimit -Hn 4096`" in message and "shard the devices over several processes" in message
    # The soft limit could not be raised (the check raises it when the fleet fits under the hard limit):
    stuck = too_many_message("big", 3000, 3000, in_use=40, pending=0, soft=1024, hard=8192)
    assert "at most 1,024 open files (its soft limit, which could not be raised to its hard limit of 8,192)" in stuck
    assert "`ulimit -Sn 8192`" in stuck
    # Beyond the hard limit, the hard limit is what counts (the soft one would be raised to it):
    beyond = too_many_message("big", 3000, 3000, in_use=40, pending=0, soft=1024, hard=2048)
    assert "at most 2,048 open files (its hard limit). Raise the hard limit" in beyond


def test_the_runtime_raises_the_soft_limit_to_the_hard_limit_when_it_starts() -> None:
    code = """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    from iotix.runtime import Runtime
    rt = Runtime()
    imported = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    rt.start()
    started = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    rt.stop()
    print(json.dumps([imported, started, hard]))
    """
    imported, started, hard = child(code)  # type: ignore[misc]
    assert imported == 256  # importing and building start nothing
    assert started == hard


def test_a_fleet_beyond_the_hard_limit_is_refused_and_pooled_protocols_fit() -> None:
    code = """
    resource.setrlimit(resource.RLIMIT_NOFILE, (700, 700))
    print(json.dumps(asyncio.run(fleets([
        ("sockets", "mqtt", 1000), ("pooled-http", "http", 1000), ("pooled-coap", "coap", 1000), ("fits", "mqtt", 100),
    ]))))
    """
    refused, http, coap, fits = child(code)  # type: ignore[misc]
    assert refused.startswith("Fleet 'sockets': its 1,000 devices need 1,000 file descriptors (sockets); with ")
    # 1,000 MQTT sockets do not fit; 1,000 HTTP devices share a pool of 100 connections (301 sockets through the
    # fault layer's proxy), 1,000 CoAP devices one socket
    assert "but it can have at most 700 open files (its hard limit)" in refused
    assert (http, coap, fits) == ("ok", "ok", "ok")


def test_fleets_created_but_not_started_count_against_the_limit() -> None:
    code = """
    resource.setrlimit(resource.RLIMIT_NOFILE, (500, 500))
    print(json.dumps(asyncio.run(fleets([("a", "mqtt", 150), ("b", "mqtt", 150), ("c", "mqtt", 150)]))))
    """
    a, b, c = child(code)  # type: ignore[misc]
    assert (a, b) == ("ok", "ok")
    assert c.startswith("Fleet 'c': its 150 devices need 150 file descriptors")
    assert "and 300 for fleets created but not started yet" in c


def test_a_fleet_that_fits_under_the_hard_limit_only_raises_the_soft_limit() -> None:
    code = """
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 1000))
    result = asyncio.run(fleets([("wide", "mqtt", 500)]))
    print(json.dumps([result, resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))
    """
    result, soft = child(code)  # type: ignore[misc]
    assert (result, soft) == (["ok"], 1000)
