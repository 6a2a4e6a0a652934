"""Live view settings: the ``http:`` section of a run config, or ``--http [HOST]:PORT``.

Data only: the credential and certificate files are read by :mod:`edge_sdk.httpauth` when the
server starts, never while validating.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TOKEN_ENV = "EDGE_SDK_HTTP_TOKEN"
PASSWORD_ENV = "EDGE_SDK_HTTP_PASSWORD"


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST]:PORT`` as ``(host, port)``; no host means every IPv4 interface, port 0 a free port."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"expected [HOST]:PORT such as :8080 or 127.0.0.1:8080, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host goes in brackets, e.g. [::1]:8080, not {text!r}")
    if any(c.isspace() for c in host):
        raise ValueError(f"the host in {text!r} contains a space")
    return host or "0.0.0.0", int(port)


def format_address(host: str, port: int) -> str:
    """The ``[HOST]:PORT`` text :func:`parse_address` reads back as ``(host, port)``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LiveViewSettings(BaseModel):
    """Where the live view listens and who may see it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(
        default=":8080",
        description="[HOST]:PORT: ':8080' on every IPv4 interface, '[::]:8080' on IPv6 too, '127.0.0.1:8080' on this "
        "machine only, port 0 on a free port. Without a token or password the live view listens on loopback only.",
    )
    token_file: Path | None = Field(
        default=None, description="File whose first line is the token: sent as 'Authorization: Bearer <token>', or once as ?token= in a browser.",
    )
    token_env: str = Field(default=TOKEN_ENV, description="Environment variable read for the token when no token_file is given.")
    password_file: Path | None = Field(
        default=None, description="File whose first line is the password, asked for by the browser (HTTP Basic) with username.",
    )
    password_env: str = Field(default=PASSWORD_ENV, description="Environment variable read for the password when no password_file is given.")
    username: str = Field(default="edge", min_length=1, max_length=64, description="User name that goes with the password.")
    cert_file: Path | None = Field(default=None, description="Server certificate (PEM, with any intermediates): serve HTTPS. Needs key_file.")
    key_file: Path | None = Field(default=None, description="Private key of cert_file (PEM, unencrypted).")
    metrics_public: bool = Field(
        default=False, description="Serve /metrics and /healthz without the credential (for a Prometheus or a health checker without one).",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_address(value)
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if ":" in value or not value.isprintable():
            raise ValueError("a user name cannot contain ':' or control characters")
        return value

    @field_validator("token_env", "password_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not value or "=" in value or not value.isprintable() or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _pairs(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (HTTPS needs both)")
        if self.token_file is not None and self.password_file is not None:
            raise ValueError("give token_file or password_file, not both")
        return self

    @property
    def address(self) -> tuple[str, int]:
        return parse_address(self.listen)

    @property
    def uses_tls(self) -> bool:
        return self.cert_file is not None
