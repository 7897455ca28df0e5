"""Certificates for MQTT over (mutual) TLS: a test CA, server certificates and one certificate per device."""

from iotix.security.certs import (
    CA_CERT_NAME,
    CA_KEY_NAME,
    DEFAULT_CA_COPY,
    DEFAULT_CERT_PATTERN,
    DEFAULT_KEY_PATTERN,
    CertificateAuthority,
    CertPair,
    DeviceCertTarget,
    create_device_certificates,
    create_server_certificate,
    default_device_targets,
    device_targets,
    load_or_create_ca,
    validity_of,
)

__all__ = [
    "CA_CERT_NAME",
    "CA_KEY_NAME",
    "DEFAULT_CA_COPY",
    "DEFAULT_CERT_PATTERN",
    "DEFAULT_KEY_PATTERN",
    "CertPair",
    "CertificateAuthority",
    "DeviceCertTarget",
    "create_device_certificates",
    "create_server_certificate",
    "default_device_targets",
    "device_targets",
    "load_or_create_ca",
    "validity_of",
]
