"""Exceptions shared by the core. The keyword libraries turn them into Robot failures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class IoTixError(Exception):
    """Base class of every error the core raises on purpose: its message is meant for the user."""

    ROBOT_SUPPRESS_NAME = True


class ConfigurationError(IoTixError):
    """A setting given by the user (keyword argument, model field, CLI option) is not usable."""


class NotFoundError(IoTixError):
    """A fleet, device, alias or file that the user named does not exist."""


@contextlib.contextmanager
def error_context(prefix: str) -> Iterator[None]:
    """Put ``prefix: `` in front of the message of a :class:`ConfigurationError` raised inside the block.

    ``with error_context(f"Fleet '{name}'"): ...`` turns ``batch_size must be at least 1, got 0.`` into
    ``Fleet 'env': batch_size must be at least 1, got 0.``; a message that already starts with the prefix
    is left as it is.
    """
    try:
        yield
    except ConfigurationError as err:
        message = str(err)
        if message.startswith(prefix):
            raise
        raise ConfigurationError(f"{prefix}: {message}") from None
