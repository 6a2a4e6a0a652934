"""Pytest fixtures for real-broker tests: one test PKI per session, a fresh Mosquitto per test, raw MQTT peers;
and for real-database tests: one PostgreSQL per session with a fresh database per test, or a server of the test's own.

tests/conftest.py re-exports them, so every test module can ask for them by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.broker import Mosquitto
from support.peer import Peer
from support.pki import Pki, make_pki
from support.postgres import MISSING as POSTGRES_MISSING, Postgres


# A fleet's ACL. The user name is the device id: the certificate's CN on the TLS listener
# (use_identity_as_username), the login on a password broker. A device writes only what the
# runtime publishes under its own prefix, never a command (cmd/<name>), only the answer to one
# (cmd/<name>/result, and edge-sdk push's per-request reply topics below it), and reads only its
# own commands. The backend (and Home Assistant) reads everything and sends commands.
FLEET_ACL = """\
user backend
topic read edge/#
topic read homeassistant/#
topic write edge/+/cmd/+

pattern write edge/%u/status
pattern write edge/%u/info
pattern write edge/%u/detections
pattern write edge/%u/metrics
pattern write edge/%u/snapshot
pattern write edge/%u/alert
pattern write edge/%u/cmd/+/result/#
pattern write homeassistant/+/%u/+/config
pattern read edge/%u/cmd/+
"""

PASSWORDS = {"cam-1": "cam-1-secret", "cam-2": "cam-2-secret", "backend": "backend-secret"}


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """CA, server certificate for 127.0.0.1/localhost, clients cam-1, cam-2, backend, expired, foreign."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _running(broker: Mosquitto) -> Iterator[Mosquitto]:
    with broker:
        yield broker
        # Shown by pytest only when the test failed.
        print(f"--- mosquitto log ({broker.folder}) ---\n{broker.log()[-6000:]}")


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[Mosquitto]:
    """A started broker: plain listener, anonymous clients allowed, no ACL."""
    yield from _running(Mosquitto(tmp_path / "mosquitto"))


@pytest.fixture
def tls_mosquitto(tmp_path, pki) -> Iterator[Mosquitto]:
    """The fleet broker: a TLS listener that requires a client certificate from our CA and takes
    its CN as the user name, FLEET_ACL, no anonymous clients (so the plain listener admits nobody)."""
    broker = Mosquitto(
        tmp_path / "tls-mosquitto", tls=pki, require_certificate=True, use_identity_as_username=True,
        acl=FLEET_ACL, allow_anonymous=False,
    )
    yield from _running(broker)


@pytest.fixture
def password_mosquitto(tmp_path) -> Iterator[Mosquitto]:
    """A plain listener with a password file (PASSWORDS), FLEET_ACL and no anonymous clients."""
    yield from _running(Mosquitto(tmp_path / "password-mosquitto", passwords=PASSWORDS, acl=FLEET_ACL, allow_anonymous=False))


@pytest.fixture
def peers():
    """Opens Peers and closes every one of them after the test."""
    opened: list[Peer] = []

    def open_peer(port: int, **kwargs) -> Peer:
        peer = Peer(port, **kwargs)
        opened.append(peer)
        return peer.open()

    yield open_peer
    for peer in opened:
        peer.close()


def _postgres_running(server: Postgres) -> Iterator[Postgres]:
    if POSTGRES_MISSING:
        pytest.skip(POSTGRES_MISSING)
    with server:
        yield server
        print(f"--- postgres log ({server.folder}) ---\n{server.log()[-6000:]}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The session's PostgreSQL 15 (scram passwords, user ``ingest``): never stop it, ask ``postgres_db`` for a database."""
    yield from _postgres_running(Postgres() if not POSTGRES_MISSING else None)


@pytest.fixture
def postgres_db(postgres) -> str:
    """The URL (with the password) of a fresh empty database on the session's PostgreSQL, owned by ``ingest``."""
    return postgres.new_database()


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of the test's own, to stop, kill and restart (its ``fleet`` database is empty)."""
    yield from _postgres_running(Postgres() if not POSTGRES_MISSING else None)
