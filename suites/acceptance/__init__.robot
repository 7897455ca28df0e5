*** Settings ***
Documentation       Acceptance suites of the IoTix keyword libraries (DeviceFleet, ProtocolClient, Chaos, Metrics):
...                 every keyword called as a user would call it, against a local Mosquitto, including its
...                 failure messages. Each suite starts its own environment (see acceptance.resource) and each
...                 test cleans up after itself, so the suites pass with plain ``robot`` and with
...                 ``pabot --processes 2 --testlevelsplit``.
