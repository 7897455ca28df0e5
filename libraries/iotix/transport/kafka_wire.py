"""Kafka on the wire without a Kafka client: bootstrap lists, and asking a server whether it is a Kafka broker.

Used by the test client (:mod:`iotix.transport.kafka_probe`) to check a broker before its clients block on
it, and by the local broker (:mod:`iotix.services.kafka_broker`) to know when Tansu is ready.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
import time

from iotix.errors import ConfigurationError
from iotix.transport.tls import ClientTls

DEFAULT_KAFKA_PORT = 9092
_API_VERSIONS_KEY = 18
_correlation_ids = itertools.count(1)


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``'host:port[,host:port...]'`` as ``[(host, port), ...]``; a server without a port gets 9092.

    Raises :class:`~iotix.errors.ConfigurationError` for an empty list or a port that is not 1..65535.
    """
    usage = f"Kafka bootstrap servers must look like 'host:port[,host:port]', got {bootstrap!r}."
    servers = []
    for part in str(bootstrap).split(","):
        item = part.strip()
        if not item:
            continue
        host, sep, port_text = item.rpartition(":")
        if not sep:
            host, port_text = item, str(DEFAULT_KAFKA_PORT)
        host = host.strip("[]")
        if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ConfigurationError(usage)
        servers.append((host, int(port_text)))
    if not servers:
        raise ConfigurationError(usage)
    return servers


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        data += chunk
    return bytes(data)


def _explain_tls(tls: ClientTls, err: BaseException, host: str, handshaken: bool) -> str:
    """Why a TLS connection to a Kafka broker failed, in words."""
    closed = isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, EOFError))
    if handshaken and (closed or isinstance(err, ssl.SSLError)):
        # TLS 1.3: the broker checks the client certificate after the handshake, on the first read
        reason = getattr(err, "reason", None)
        if tls.cert is not None:
            return (
                f"the broker closed the connection right after the TLS handshake ({reason or 'no alert'}): it "
                f"refused the client certificate '{tls.cert}' (most likely not signed by a CA it trusts)"
            )
        return (
            f"the broker closed the connection right after the TLS handshake ({reason or 'no alert'}): it "
            "probably requires a client certificate, and connection.tls has no certFile"
        )
    return tls.explain(err, host)


def probe_kafka(host: str, port: int, timeout: float = 1.0, tls: ClientTls | None = None) -> str | None:
    """Ask ``host:port`` for its Kafka API versions; None when it answers like a Kafka broker, else why not.

    An ApiVersions v0 request on a socket of its own (no Kafka client involved), answered within ``timeout``
    seconds in all. With ``tls`` the socket does the TLS handshake first, and a failed handshake is
    explained in words (unknown CA, host name mismatch, client certificate refused).
    """
    deadline = time.monotonic() + timeout
    correlation = next(_correlation_ids) & 0x7FFFFFFF
    client_id = b"iotix-probe"
    request = struct.pack(">hhih", _API_VERSIONS_KEY, 0, correlation, len(client_id)) + client_id
    handshaken = False
    try:
        with socket.create_connection((host, port), timeout=timeout) as plain:
            sock: socket.socket = plain
            try:
                if tls is not None:
                    sock = tls.context.wrap_socket(plain, server_hostname=host)  # handshakes within the timeout
                    handshaken = True
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(struct.pack(">i", len(request)) + request)
                head = _recv_exact(sock, 4, deadline)
                (size,) = struct.unpack(">i", head)
                if not 6 <= size <= 1 << 20:
                    if tls is None and head[:2] in (b"\x15\x03", b"\x16\x03"):
                        return (
                            f"{host}:{port} answered with TLS: it is a TLS listener, connect with TLS (connection.tls)"
                        )
                    return f"{host}:{port} answered, but not like a Kafka broker"
                body = _recv_exact(sock, size, deadline)
            finally:
                if sock is not plain:
                    sock.close()
    except socket.gaierror as err:
        return f"cannot resolve host '{host}' ({err.strerror})"
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection (nothing listens there)"
    except TimeoutError:
        return f"{host}:{port} gave no Kafka answer within {timeout:g} s"
    except ConnectionResetError as err:
        if tls is not None:
            return f"TLS connection to {host}:{port} failed: {_explain_tls(tls, err, host, handshaken)}"
        return f"{host}:{port} closed the connection without a Kafka answer: is it a TLS listener (connection.tls)?"
    except (ssl.SSLError, OSError, EOFError) as err:
        if tls is not None:
            return f"TLS connection to {host}:{port} failed: {_explain_tls(tls, err, host, handshaken)}"
        return f"{host}:{port}: {getattr(err, 'strerror', None) or err}"
    answered, error_code = struct.unpack(">ih", body[:6])
    if answered != correlation:
        return f"{host}:{port} answered, but not like a Kafka broker"
    if error_code:
        return f"{host}:{port} answered ApiVersions with Kafka error code {error_code}"
    return None


# ---------------------------------------------------------------------------------------------- broker
