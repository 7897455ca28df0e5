"""The base class of the four keyword libraries: a library built from keyword components.

As SeleniumLibrary and Browser do, each library (``iotix.DeviceFleet``, ``iotix.ProtocolClient``,
``iotix.Chaos``, ``iotix.Metrics``) is a :class:`robotlibcore.DynamicCore` over a list of component
instances (:class:`~iotix._robot.component.LibraryComponent` subclasses, each given the library as ``ctx``):

    class DeviceFleet(IoTixLibrary):
        def __init__(self, timeout: timedelta = timedelta(seconds=30)) -> None:
            super().__init__([FleetKeywords(self), DeviceKeywords(self)], timeout=timeout)

What every library shares lives here:

- GLOBAL scope, Robot's doc format, the version, and the listener that cleans up what a suite created
  when that suite ends (:class:`~iotix._robot.context.SuiteCleanupListener`);
- ``timeout``: the library's default timeout (its import argument), used by keywords whose ``timeout``
  is left at its default;
- :meth:`IoTixLibrary.run_keyword`: THE one place where errors of the core (:class:`iotix.errors.IoTixError`
  and its subclasses: ConfigurationError, NotFoundError, TransportError, ...) become keyword failures
  (:class:`~iotix._robot.context.KeywordError`, shown without its class name), and where log records of
  the runtime thread are written into the Robot log after every keyword.

Building a library starts nothing: no thread, no socket (the runtime starts on the first keyword that needs it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from robotlibcore import DynamicCore

from iotix import __version__
from iotix._robot.context import Context, KeywordError, SuiteCleanupListener, flush_logs, get_context
from iotix._robot.convert import seconds
from iotix.errors import ConfigurationError, IoTixError

#: The default of every library's ``timeout`` import argument, unless the library says otherwise.
DEFAULT_TIMEOUT = timedelta(seconds=30)


class IoTixLibrary(DynamicCore):
    """Base of the IoTix keyword libraries (see the module docstring)."""

    ROBOT_LIBRARY_SCOPE = "GLOBAL"
    ROBOT_LIBRARY_VERSION = __version__
    ROBOT_LIBRARY_DOC_FORMAT = "ROBOT"

    def __init__(self, components: Iterable[object], timeout: timedelta | float = DEFAULT_TIMEOUT) -> None:
        limit = seconds(timeout)
        if limit <= 0:
            raise ConfigurationError(f"The library's timeout must be above 0 s, got {limit:g} s.")
        self._timeout = limit
        self._context = get_context()
        self.ROBOT_LIBRARY_LISTENER = SuiteCleanupListener()
        DynamicCore.__init__(self, list(components))

    @property
    def context(self) -> Context:
        """The process-wide context, shared by every library of the process."""
        return self._context

    @property
    def timeout(self) -> float:
        """The default timeout of this library instance, seconds."""
        return self._timeout

    def run_keyword(self, name: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
        """Run a keyword; a core error becomes a keyword failure, runtime logs go to the Robot log."""
        try:
            return DynamicCore.run_keyword(self, name, args, kwargs)
        except KeywordError:
            raise
        except IoTixError as err:
            raise KeywordError(str(err)) from None
        finally:
            flush_logs()
