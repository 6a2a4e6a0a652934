"""Who may see the live view: one credential checked before any route, failed guesses throttled, HTTPS.

A token is for programs (``Authorization: Bearer``) and for a browser opened once with ``?token=``,
which swaps it for an HttpOnly cookie; a password is for a browser's own prompt (HTTP Basic).
Standard library only, like the server it guards, and independent of what that server shows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from edge_sdk.errors import ConfigError
from edge_sdk.httpsettings import LiveViewSettings

REALM = "edge-sdk live view"
PUBLIC_PATHS = ("/metrics", "/healthz")  # opened by metrics_public
MAX_FAILURES = 10  # wrong credentials from one address within FAILURE_WINDOW_S before it is told to wait
FAILURE_WINDOW_S = 60.0
MAX_TRACKED_CLIENTS = 4096


@dataclass(frozen=True)
class Credential:
    """The one secret the live view asks for; ``origin`` says where it came from, for messages."""

    kind: Literal["token", "password"]
    secret: str = field(repr=False)
    origin: str
    username: str = "edge"

    def describe(self) -> str:
        if self.kind == "token":
            return f"token required ({self.origin}): 'Authorization: Bearer <token>', or open the page once with ?token=<token>"
        return f"user {self.username!r} and password required ({self.origin})"


# -- reading the credential and the certificate (at start, never while validating) -----------------

def _first_line(path: Path, setting: str) -> str:
    try:
        # One line is read, at most 4 KB: the file may be /dev/zero or a binary key by mistake.
        with open(path, "rb") as handle:
            line = handle.readline(4096).decode("utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{setting}: {path} cannot be read: {_lower(exc.strerror or str(exc))}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: {path} is not UTF-8 text") from None
    if not line.strip():
        raise ConfigError(f"{setting}: {path} is empty (its first line is the secret)")
    return line


def _from_env(settings: LiveViewSettings, setting: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    name = getattr(settings, setting)
    value = environ.get(name)
    if value is None:
        if setting in settings.model_fields_set:  # named on purpose, so its absence is a mistake
            raise ConfigError(f"http.{setting}: the environment variable {name} is not set")
        return None
    if not value.strip():
        raise ConfigError(f"the environment variable {name} is set but empty")
    return value, f"${name}"


def _secret(settings: LiveViewSettings, kind: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    path = getattr(settings, f"{kind}_file")
    if path is not None:
        return _first_line(path, f"http.{kind}_file"), f"{kind} file {path}"
    return _from_env(settings, f"{kind}_env", environ)


def load_credential(settings: LiveViewSettings, *, environ: Mapping[str, str] | None = None) -> Credential | None:
    """The token or password of ``settings`` from its file or the environment; None when there is neither."""
    environ = os.environ if environ is None else environ
    token, password = _secret(settings, "token", environ), _secret(settings, "password", environ)
    if token is not None and password is not None:
        raise ConfigError(f"the live view got both a token ({token[1]}) and a password ({password[1]}); give one")
    if token is not None:
        secret = token[0].strip()
        if not (secret.isascii() and secret.isprintable()) or " " in secret:
            raise ConfigError(f"the live view token ({token[1]}) must be printable ASCII without spaces")
        return Credential("token", secret, token[1])
    if password is not None:
        if not password[0].isprintable():
            raise ConfigError(f"the live view password ({password[1]}) contains control characters")
        return Credential("password", password[0], password[1], settings.username)
    return None


def _no_passphrase() -> bytes:
    raise ConfigError("the key is encrypted")  # OpenSSL would otherwise ask on the terminal


def load_tls(settings: LiveViewSettings) -> ssl.SSLContext | None:
    """A server TLS context from ``cert_file`` and ``key_file``; None for plain HTTP."""
    if not settings.uses_tls:
        return None
    for setting in ("cert_file", "key_file"):
        path = getattr(settings, setting)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"http.{setting}: {path} cannot be read: {_lower(exc.strerror or str(exc))}") from exc
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file, password=_no_passphrase)
    except ConfigError as exc:
        raise ConfigError(f"http.key_file: {settings.key_file}: {exc}; give an unencrypted key") from None
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        raise ConfigError(f"http.cert_file/key_file: {settings.cert_file} and {settings.key_file} are not a "
                          f"PEM certificate and its key ({reason})") from exc
    return context


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


# -- checking requests -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """A response the gate sends in place of the page: a refusal, or the redirect that sets the cookie."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


class Throttle:
    """Counts wrong credentials per client address; past ``limit`` in ``window_s`` it says how long to wait."""

    def __init__(self, *, limit: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S, clock=time.monotonic) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            times = self._failures.get(client)
            if times is None or len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window_s - self._clock())

    def fail(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            if client not in self._failures and len(self._failures) >= MAX_TRACKED_CLIENTS:
                self._forget(now)
            times = self._failures.setdefault(client, deque(maxlen=self.limit))
            times.append(now)

    def _forget(self, now: float) -> None:
        for client in [c for c, t in self._failures.items() if t[-1] + self.window_s < now]:
            del self._failures[client]
        while len(self._failures) >= MAX_TRACKED_CLIENTS:  # a flood from many addresses: the oldest go
            del self._failures[next(iter(self._failures))]


def _digest(value: bytes) -> bytes:
    # Hashed first, so that compare_digest compares equal lengths and the time taken says nothing of the length.
    return hashlib.sha256(value).digest()


class Gate:
    """Decides, before any route, whether a request may see the live view.

    ``credential`` None lets everyone in (the server then listens on loopback only). ``port`` names
    the cookie, since browsers share cookies between the ports of one host.
    """

    def __init__(self, credential: Credential | None, *, metrics_public: bool = False, secure: bool = False,
                 port: int = 0, throttle: Throttle | None = None) -> None:
        self.credential, self.metrics_public, self.secure = credential, metrics_public, secure
        self.cookie_name = f"edge_sdk_live_{port}"
        self.throttle = throttle or Throttle()
        self._expected = b""
        self._cookie = ""
        if credential is not None and credential.kind == "token":
            self._expected = _digest(credential.secret.encode())
            # The cookie is derived from the token, not the token itself: it opens this view, and
            # the token cannot be read back from it.
            self._cookie = hmac.new(credential.secret.encode(), b"edge-sdk live view cookie", hashlib.sha256).hexdigest()
        elif credential is not None:
            self._expected = _digest(f"{credential.username}:{credential.secret}".encode())

    def check(self, client: str, target: str, headers: Message) -> Answer | None:
        """None to serve the request; otherwise the answer to send instead (401, 429, or 303 with the cookie)."""
        if self.credential is None:
            return None
        url = urlsplit(target)
        if self.metrics_public and url.path in PUBLIC_PATHS:
            return None
        wait = self.throttle.wait_s(client)
        if wait > 0:
            return Answer(429, (("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", str(int(wait) + 1))),
                          b"429 Too Many Requests: too many wrong credentials from this address; try again later\n")
        query = parse_qsl(url.query, keep_blank_values=True)
        offered = [value for name, value in query if name == "token"]
        if offered and self.credential.kind == "token":
            if not self._matches(offered[-1].encode()):
                return self._refuse(client, wrong=True)
            rest = urlencode([(name, value) for name, value in query if name != "token"])
            path = "/" + url.path.lstrip("/")  # "//host" would be a redirect to another site
            return Answer(303, (("Location", path + (f"?{rest}" if rest else "")), ("Set-Cookie", self._set_cookie()),
                                ("Referrer-Policy", "no-referrer")))
        verdict = self._presented(headers)
        if verdict:
            return None
        return self._refuse(client, wrong=verdict is False)

    def _matches(self, value: bytes) -> bool:
        return hmac.compare_digest(_digest(value), self._expected)

    def _presented(self, headers: Message) -> bool | None:
        """True: a right credential; False: only wrong ones; None: none at all."""
        verdicts = []
        authorization = headers.get("Authorization")
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            verdicts.append(self._authorization(scheme.lower(), value.strip()))
        if self.credential.kind == "token":
            for header in headers.get_all("Cookie") or ():
                for pair in header.split(";"):
                    name, _, value = pair.strip().partition("=")
                    if name == self.cookie_name:
                        verdicts.append(hmac.compare_digest(_digest(value.encode()), _digest(self._cookie.encode())))
        return any(verdicts) if verdicts else None

    def _authorization(self, scheme: str, value: str) -> bool:
        if scheme == "bearer" and self.credential.kind == "token":
            return self._matches(value.encode())
        if scheme == "basic" and self.credential.kind == "password":
            try:
                return self._matches(base64.b64decode(value, validate=True))
            except ValueError:
                return False
        return False

    def _set_cookie(self) -> str:
        return f"{self.cookie_name}={self._cookie}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if self.secure else "")

    def _refuse(self, client: str, *, wrong: bool) -> Answer:
        if wrong:
            self.throttle.fail(client)
        if self.credential.kind == "password":
            challenge = f'Basic realm="{REALM}", charset="UTF-8"'
            body = b"401 Unauthorized: this live view needs its user name and password\n"
        else:
            challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if wrong else "")
            body = b"401 Unauthorized: this live view needs its token ('Authorization: Bearer <token>', or ?token=<token> once)\n"
        return Answer(401, (("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", challenge)), body)
