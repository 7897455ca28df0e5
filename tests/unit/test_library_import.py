"""Importing the keyword libraries (as libdoc and robot --dryrun do) starts no thread and opens no socket."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import os, threading
def sockets():
    n = 0
    for fd in os.listdir('/proc/self/fd'):
        try:
            n += os.readlink(f'/proc/self/fd/{fd}').startswith('socket:')
        except OSError:
            pass
    return n
before = sockets()
from iotix.DeviceFleet import DeviceFleet
from iotix.ProtocolClient import ProtocolClient
from iotix.Chaos import Chaos
from iotix.Metrics import Metrics
libs = [DeviceFleet(), ProtocolClient(), Chaos(), Metrics()]
from robot.libdocpkg import LibraryDocumentation
docs = [LibraryDocumentation(f'iotix.{n}') for n in ('DeviceFleet', 'ProtocolClient', 'Chaos', 'Metrics')]
assert all(d.keywords for d in docs)
print(threading.active_count(), sockets() - before)
"""


def test_import_and_libdoc_start_nothing() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    threads, new_sockets = map(int, out.stdout.split())
    assert threads == 1
    assert new_sockets == 0
