"""DeviceFleet component: X.509 client certificates for the devices of a fleet (MQTT over mutual TLS)."""

from __future__ import annotations

from pathlib import Path

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.types import DeviceCertificates
from iotix.errors import ConfigurationError


class CertificateKeywords(LibraryComponent):
    """Per-device client certificates signed by a test CA."""

    @keyword
    def create_device_certificates(
        self, fleet: str, ca_dir: Path, expired: bool = False, days: int = 365
    ) -> DeviceCertificates:
        """Signs one client certificate per device of ``fleet`` with the CA in ``ca_dir``, where the devices
        will look for them; returns ``directory``, ``count`` and ``caFile``.

        The fleet must have been created with ``tls_dir`` (see `Create Fleet`) from a model whose
        ``connection.tls`` has ``certFile`` and ``keyFile`` patterns such as ``certs/${deviceId}.pem`` and
        ``certs/${deviceId}.key``: each device's certificate (subject common name = its device id, EC
        P-256) and key (mode 0600) are written to the paths those patterns give under ``tls_dir``. When
        ``caFile`` is a relative path too (``certs/ca.pem``), the CA certificate is copied there. The CA
        (``ca.pem``, ``ca.key``) is created in ``ca_dir`` unless it is there; use the ``ca_dir`` of
        `Start Local MQTT Broker` ``tls=True`` so that the broker trusts the devices.

        - ``expired``: make certificates that expired yesterday (to test refused devices).
        - ``days``: how long the certificates are valid.

        | =Key= | =Value= |
        | ``directory`` | the fleet's ``tls_dir``, under which the certificates and keys are |
        | ``count`` | how many certificates were written |
        | ``caFile`` | the CA certificate the devices use |

        Certificates already there are replaced. Private keys are never logged.

        | ${secure} =    Start Local MQTT Broker    tls=True    ca_dir=${WORKDIR}/ca
        | ${fleet} =    Create Fleet    secure-env-sensor    count=10    tls_dir=${WORKDIR}/devices
        | ...    host=${secure}[host]    port=${secure}[port]
        | ${certs} =    Create Device Certificates    ${fleet}    ${secure}[caDir]
        | Start Fleet    ${fleet}
        """
        from iotix.security.certs import create_device_certificates, device_targets, load_or_create_ca

        f = self.fleet(fleet)
        if not f.options.tls_dir:  # options are frozen: safe to read here
            raise KeywordError(
                f"Fleet '{fleet}' has no tls_dir: create it with Create Fleet and tls_dir=<a folder for its "
                "certificates>, so that private keys are not written next to the model file."
            )
        if days < 1:
            raise KeywordError(f"days must be >= 1, got {days}.")
        tls, devices = self.call(lambda: (f.tls(), f.device_variables()))
        cert_pattern = tls.pattern("certFile") if tls is not None else None
        key_pattern = tls.pattern("keyFile") if tls is not None else None
        if tls is None or cert_pattern is None or key_pattern is None:
            raise KeywordError(
                f"Fleet '{fleet}' (model '{f.model.id}') has no connection.tls with certFile and keyFile: "
                "its devices would not use client certificates."
            )
        if tls.fleet_path("certFile") is not None:
            raise KeywordError(
                f"Fleet '{fleet}': connection.tls.certFile '{cert_pattern}' is the same file for every device; "
                "use a per-device pattern such as certs/${deviceId}.pem."
            )
        base = tls.base_dir
        ca_file = tls.fleet_path("caFile")
        ca_copy = ca_file if ca_file is not None and ca_file.is_relative_to(base) else None
        try:
            ca = load_or_create_ca(ca_dir)
            targets = device_targets(base, devices, cert_pattern=cert_pattern, key_pattern=key_pattern)
            count = create_device_certificates(ca, targets, days=days, expired=expired, ca_copy=ca_copy)
        except (ConfigurationError, OSError) as err:
            raise KeywordError(f"Cannot create the certificates of fleet '{fleet}': {err}") from None
        state = "expired " if expired else ""
        logger.info(
            f"Fleet '{fleet}': {count} {state}device certificates signed by '{ca.common_name}' ({ca.cert_path}) "
            f"written under {base} ({cert_pattern}, {key_pattern})"
            + (f"; CA certificate copied to {ca_copy}." if ca_copy else ".")
        )
        return {"directory": str(base), "count": count, "caFile": str(ca_copy or ca.cert_path)}
