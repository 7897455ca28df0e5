"""Telemetry value generators: what a device SENDS, reproducibly.

``check_generator`` validates a generator spec (the model loader calls it), ``build_generator`` makes one
generator, ``DeviceValues`` makes all of a device's generators from its model. See docs/model-format.md.
"""

from iotix.generate.base import Generator
from iotix.generate.device import DeviceValues
from iotix.generate.ecg import ecg_generator
from iotix.generate.factory import GENERATOR_TYPES, build_generator, check_generator
from iotix.generate.handlers import HandlerFactory, register_handler, registered_handlers, resolve_handler
from iotix.generate.replay import clear_replay_cache
from iotix.generate.rng import device_rng

__all__ = [
    "GENERATOR_TYPES",
    "DeviceValues",
    "Generator",
    "HandlerFactory",
    "build_generator",
    "check_generator",
    "clear_replay_cache",
    "device_rng",
    "ecg_generator",
    "register_handler",
    "registered_handlers",
    "resolve_handler",
]
