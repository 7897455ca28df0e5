"""Device models: what a device IS. Loaded from JSON or YAML, validated, immutable."""

from iotix.model.errors import ModelCollectionError, ModelError, ModelNotFoundError, UnknownModelError
from iotix.model.loader import ModelRegistry, load_model, load_model_dict, load_models, validate_model_dict
from iotix.model.types import (
    BehaviorSpec,
    CommandSpec,
    DeviceModel,
    PayloadSpec,
    TelemetryField,
)

__all__ = [
    "BehaviorSpec",
    "CommandSpec",
    "DeviceModel",
    "ModelCollectionError",
    "ModelError",
    "ModelNotFoundError",
    "ModelRegistry",
    "PayloadSpec",
    "TelemetryField",
    "UnknownModelError",
    "load_model",
    "load_model_dict",
    "load_models",
    "validate_model_dict",
]
