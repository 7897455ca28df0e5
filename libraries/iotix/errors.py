"""Exceptions shared by the core. The keyword libraries turn them into Robot failures."""

from __future__ import annotations


class IoTixError(Exception):
    """Base class of every error the core raises on purpose: its message is meant for the user."""

    ROBOT_SUPPRESS_NAME = True


class ConfigurationError(IoTixError):
    """A setting given by the user (keyword argument, model field, CLI option) is not usable."""


class NotFoundError(IoTixError):
    """A fleet, device, alias or file that the user named does not exist."""
