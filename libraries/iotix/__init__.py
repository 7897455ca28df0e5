"""IoTix: simulate fleets of IoT devices from Robot Framework.

The four keyword libraries are ``iotix.DeviceFleet``, ``iotix.ProtocolClient``, ``iotix.Chaos`` and
``iotix.Metrics``. Everything else is the core, usable from plain Python without Robot Framework.
"""

__version__ = "0.1.0"
