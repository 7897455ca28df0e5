"""Single CoAP requests and observations for keywords and tests (aiocoap client contexts).

- :func:`coap_request`: one GET/POST/PUT/DELETE with a timeout -> ``("2.05", payload)``;
- :func:`observe`: start observing a resource; the returned :class:`CoapObservation` collects every
  notification in the background (``notifications``, ``wait_for(count, timeout)``, ``cancel()``).

Each call opens its own client context (one UDP socket) and closes it when done; these are for checks, not
for load (fleets use :mod:`iotix.transport.coap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from iotix.errors import IoTixError
from iotix.transport.coap_codec import dotted_code

__all__ = ["CoapClientError", "CoapObservation", "coap_request", "observe"]

METHODS = ("GET", "POST", "PUT", "DELETE", "FETCH", "PATCH")


class CoapClientError(IoTixError):
    """A CoAP request failed or timed out; the message names the method, the URI and the reason."""


def _failure(what: str, err: BaseException) -> CoapClientError:
    """``CoAP GET coap://..: no answer: [Errno 111] Connection refused ...`` from an aiocoap error."""
    cause = err.__cause__
    detail = str(cause) if cause is not None else (str(err.args[0]) if err.args else str(err))
    return CoapClientError(f"{what}: no answer: {detail or type(err).__name__}")


def _build_request(method: str, uri: str, payload: bytes | str, content_format: int | None, observe: bool) -> Any:
    import aiocoap

    name = method.upper()
    if name not in METHODS:
        raise CoapClientError(f"CoAP method must be one of {', '.join(METHODS)}, got {method!r}")
    if not uri.startswith(("coap://", "coap+udp://")):
        raise CoapClientError(f"CoAP URI must start with coap://, got {uri!r}")
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    kwargs: dict[str, Any] = {}
    if content_format is not None:
        kwargs["content_format"] = int(content_format)
    if observe:
        kwargs["observe"] = 0
    return aiocoap.Message(code=getattr(aiocoap.Code, name), uri=uri, payload=data, **kwargs)


async def coap_request(
    method: str,
    uri: str,
    payload: bytes | str = b"",
    content_format: int | None = None,
    timeout: float = 10.0,
) -> tuple[str, bytes]:
    """Send one confirmable request; return the response code (``"2.05"``) and payload.

    Raises :class:`CoapClientError` when no response arrives within ``timeout`` seconds or the request
    cannot be sent (unknown host, network error). Error responses (4.xx, 5.xx) are returned, not raised.
    """
    import aiocoap

    request = _build_request(method, uri, payload, content_format, observe=False)
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        response = await asyncio.wait_for(ctx.request(request).response, timeout)
    except TimeoutError:
        raise CoapClientError(f"CoAP {method.upper()} {uri}: timeout, no response within {timeout:g} s") from None
    except aiocoap.error.Error as err:
        raise _failure(f"CoAP {method.upper()} {uri}", err) from None
    finally:
        await ctx.shutdown()
    return dotted_code(int(response.code)), bytes(response.payload)


class CoapObservation:
    """Notifications of one observed resource, collected in the background.

    ``notifications`` holds dicts ``{"code": "2.05", "payload": bytes, "time": epoch seconds}`` (the first
    is the response to the initial GET); ``error`` is set when the observation ended with an error.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.notifications: list[dict[str, Any]] = []
        self.error: str | None = None
        self._ctx: Any = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def count(self) -> int:
        return len(self.notifications)

    def payloads(self) -> list[bytes]:
        return [n["payload"] for n in self.notifications]

    async def _start(self, timeout: float) -> None:
        import aiocoap

        request = _build_request("GET", self.uri, b"", None, observe=True)
        self._ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        pending = self._ctx.request(request)
        try:
            first = await asyncio.wait_for(pending.response, timeout)
        except TimeoutError:
            await self._ctx.shutdown()
            raise CoapClientError(f"CoAP observe {self.uri}: timeout, no response within {timeout:g} s") from None
        except aiocoap.error.Error as err:
            await self._ctx.shutdown()
            raise _failure(f"CoAP observe {self.uri}", err) from None
        self._add(first)
        if first.opt.observe is None:
            self.error = f"{self.uri} is not observable (answered {dotted_code(int(first.code))} without Observe)"
            return
        self._task = asyncio.get_running_loop().create_task(self._collect(pending.observation))

    async def _collect(self, observation: Any) -> None:
        try:
            async for notification in observation:
                self._add(notification)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.error = f"observation of {self.uri} ended: {type(err).__name__}: {err}"
            self._changed.set()

    def _add(self, message: Any) -> None:
        self.notifications.append(
            {"code": dotted_code(int(message.code)), "payload": bytes(message.payload), "time": time.time()}
        )
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` notifications arrived; False on timeout or when the observation ended."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.count < count:
            if self.error is not None and (self._task is None or self._task.done()):
                return False
            remaining = end - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def cancel(self) -> None:
        """Stop observing (the context is closed, the server forgets the observer at its next notification)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.shutdown()


async def observe(uri: str, timeout: float = 10.0) -> CoapObservation:
    """Start observing ``uri`` (GET with Observe); raises :class:`CoapClientError` if the first GET fails."""
    observation = CoapObservation(uri)
    await observation._start(timeout)
    return observation
