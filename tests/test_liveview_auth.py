"""Who may see ``edge-sdk run --http``: tokens, passwords, loopback without either, HTTPS, throttling.

A real bundle served by the real server; HTTP spoken by http.client and by a real headless Chromium.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization

from edge_sdk.cli import main
from edge_sdk.config import RunConfig, load_config
from edge_sdk.errors import ConfigError
from edge_sdk.httpauth import MAX_FAILURES, load_credential, load_tls
from edge_sdk.httpsettings import LiveViewSettings
from edge_sdk.liveview import LiveView
from edge_sdk.runtime import Runtime
from support import interrupt, wait
from support.pki import make_pki
from support.browser import chromium, needs_browser
from test_liveview import FRAME_SIZE, bundle, video  # noqa: F401  (fixtures)

TOKEN = "s3cret-Token_0123456789"
PASSWORD = "correct horse battery"
PATHS = ("/", "/stream.mjpg", "/stats.json", "/metrics", "/healthz")
HTTP_ENV = ("EDGE_SDK_HTTP_TOKEN", "EDGE_SDK_HTTP_PASSWORD")


@pytest.fixture(autouse=True)
def _no_credential_in_the_environment(monkeypatch):
    for name in HTTP_ENV:
        monkeypatch.delenv(name, raising=False)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def fetch(base: str, path: str, *, headers: dict | None = None, ca: Path | None = None,
          source: str | None = None, timeout: float = 5.0) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One GET, redirects not followed; a 200 stream is read only up to its first JPEG's start."""
    url = urlsplit(base)
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout, context=ssl.create_default_context(cafile=ca))
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout,
                                          source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        if response.status == 200 and path.startswith("/stream.mjpg"):
            body = b""
            while b"\xff\xd8" not in body:
                body += response.read1(4096) or pytest.fail("the stream ended before a JPEG")
        else:
            body = response.read()
        response.close()
        return response.status, response.headers, body
    finally:
        conn.close()


@contextlib.contextmanager
def serving(bundle: Path, video: Path, settings: LiveViewSettings):
    """A live view on ``settings`` over a runtime playing ``video`` in a loop, once 3 frames are done."""
    config = RunConfig(source=str(video), loop=True, fps=25, threshold=0, http=settings)
    with Runtime(bundle, config) as runtime:
        runtime.start()
        deadline = time.monotonic() + 20
        while runtime.cameras[0].stats.frames_done < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runtime.cameras[0].stats.frames_done >= 3
        yield runtime.view


def _base(view: LiveView) -> str:
    return f"http://127.0.0.1:{view.port}"


def _secret_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text + "\n")
    return path


def _assert_leaks_nothing(body: bytes) -> None:
    assert b"\xff\xd8" not in body and b"frames_done" not in body and b"edge_sdk_" not in body and b"<img" not in body


# -- settings and credentials (no server) -------------------------------------------------------------

def test_the_old_address_string_still_works_and_a_mapping_adds_the_credential(tmp_path):
    assert RunConfig(http=":8080").http == LiveViewSettings(listen=":8080")
    config = tmp_path / "run.yaml"
    config.write_text(f"http: {{listen: '127.0.0.1:9000', token_file: {tmp_path / 't'}, metrics_public: true}}\n")
    loaded = load_config(config)
    assert loaded.http.listen == "127.0.0.1:9000" and loaded.http.token_file == tmp_path / "t" and loaded.http.metrics_public
    # --http moves the file's live view and keeps its credential.
    moved = load_config(config, http="127.0.0.1:0")
    assert moved.http.listen == "127.0.0.1:0" and moved.http.token_file == tmp_path / "t"
    assert load_config(None, http=":1").http.listen == ":1"


@pytest.mark.parametrize("section, problem", [
    ("{listen: ':0', cert_file: c.pem}", "field 'http': cert_file and key_file go together"),
    ("{key_file: k.pem}", "field 'http': cert_file and key_file go together"),
    ("{token_file: t, password_file: p}", "field 'http': give token_file or password_file, not both"),
    ("{username: 'a:b', password_file: p}", "field 'http.username': a user name cannot contain ':'"),
    ("{token_env: ''}", "field 'http.token_env': '' is not an environment variable name"),
    ("{listen: '8080'}", "field 'http.listen': expected [HOST]:PORT"),
    ("{listen: ':0', token: abc}", "field 'http.token': unknown field"),
    ("8080", "field 'http'"),
])
def test_bad_http_sections_are_one_line(tmp_path, section, problem):
    config = tmp_path / "run.yaml"
    config.write_text(f"http: {section}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert problem in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_the_credential_comes_from_a_file_or_the_environment(tmp_path):
    token_file = _secret_file(tmp_path, "token", f"  {TOKEN}  ")
    token = load_credential(LiveViewSettings(token_file=token_file), environ={})
    assert (token.kind, token.secret, token.origin) == ("token", TOKEN, f"token file {token_file}")
    assert TOKEN not in repr(token)
    password = load_credential(LiveViewSettings(username="ops"), environ={"EDGE_SDK_HTTP_PASSWORD": PASSWORD})
    assert (password.kind, password.secret, password.username, password.origin) == ("password", PASSWORD, "ops", "$EDGE_SDK_HTTP_PASSWORD")
    named = load_credential(LiveViewSettings(token_env="MY_TOKEN"), environ={"MY_TOKEN": TOKEN, "EDGE_SDK_HTTP_TOKEN": "other"})
    assert named.secret == TOKEN
    assert load_credential(LiveViewSettings(), environ={}) is None


def test_bad_credentials_are_one_line_errors_naming_the_problem(tmp_path):
    empty, blank, binary = tmp_path / "empty", tmp_path / "blank", tmp_path / "binary"
    empty.write_text("")
    blank.write_text("   \nsecond line\n")
    binary.write_bytes(bytes(range(128, 256)))
    cases = [
        (LiveViewSettings(token_file=empty), {}, f"http.token_file: {empty} is empty"),
        (LiveViewSettings(token_file=blank), {}, f"http.token_file: {blank} is empty"),
        (LiveViewSettings(token_file=tmp_path / "none"), {}, f"http.token_file: {tmp_path / 'none'} cannot be read: no such file"),
        (LiveViewSettings(password_file=binary), {}, f"http.password_file: {binary} is not UTF-8 text"),
        (LiveViewSettings(token_file=_secret_file(tmp_path, "spaced", "two words")), {}, "token (token file"),
        (LiveViewSettings(token_file=_secret_file(tmp_path, "t", TOKEN)), {"EDGE_SDK_HTTP_PASSWORD": PASSWORD},
         "got both a token (token file"),
        (LiveViewSettings(), {"EDGE_SDK_HTTP_TOKEN": TOKEN, "EDGE_SDK_HTTP_PASSWORD": PASSWORD},
         "got both a token ($EDGE_SDK_HTTP_TOKEN) and a password ($EDGE_SDK_HTTP_PASSWORD); give one"),
        (LiveViewSettings(token_env="MY_TOKEN"), {}, "http.token_env: the environment variable MY_TOKEN is not set"),
        (LiveViewSettings(), {"EDGE_SDK_HTTP_TOKEN": ""}, "EDGE_SDK_HTTP_TOKEN is set but empty"),
    ]
    for settings, environ, problem in cases:
        with pytest.raises(ConfigError) as caught:
            load_credential(settings, environ=environ)
        assert problem in str(caught.value) and "\n" not in str(caught.value), (problem, str(caught.value))


def test_bad_certificate_files_are_one_line_errors(tmp_path):
    pki = make_pki(tmp_path / "pki", devices=())
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"passphrase")))
    assert load_tls(LiveViewSettings(cert_file=pki.server_cert, key_file=pki.server_key)) is not None
    assert load_tls(LiveViewSettings()) is None
    cases = [
        (pki.server_cert, tmp_path / "none.key", f"http.key_file: {tmp_path / 'none.key'} cannot be read: no such file"),
        (pki.server_cert, tmp_path, f"http.key_file: {tmp_path} cannot be read: is a directory"),
        (pki.server_cert, pki.wrong_host_key, "are not a PEM certificate and its key (key values mismatch)"),
        (pki.server_key, pki.server_key, "are not a PEM certificate and its key"),
        (pki.server_cert, encrypted, f"http.key_file: {encrypted}: the key is encrypted; give an unencrypted key"),
    ]
    for cert, key_file, problem in cases:
        with pytest.raises(ConfigError) as caught:
            load_tls(LiveViewSettings(cert_file=cert, key_file=key_file))
        assert problem in str(caught.value) and "\n" not in str(caught.value), (problem, str(caught.value))


# -- the real server ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(60, func_only=True)
def test_a_token_is_needed_on_every_path_and_accepted_as_bearer(bundle, video, tmp_path):
    settings = LiveViewSettings(listen="127.0.0.1:0", token_file=_secret_file(tmp_path, "token", TOKEN))
    with serving(bundle, video, settings) as view:
        base = _base(view)
        assert "token required" in view.notice
        for path in (*PATHS, "/nope"):
            status, headers, body = fetch(base, path)
            assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="edge-sdk live view"', (path, status)
            assert body.startswith(b"401 Unauthorized") and len(body) < 200
            _assert_leaks_nothing(body)
            status, headers, body = fetch(base, path, headers={"Authorization": f"Bearer {TOKEN}x"})
            assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"], (path, status)
            _assert_leaks_nothing(body)
        assert fetch(base, "/", headers={"Authorization": _basic("edge", TOKEN)})[0] == 401  # a token is no password
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert fetch(base, "/", headers=good)[2].startswith(b"<!doctype html>")
        stream = fetch(base, "/stream.mjpg", headers=good)
        assert stream[0] == 200 and stream[1]["Content-Type"].startswith("multipart/x-mixed-replace")
        assert json.loads(fetch(base, "/stats.json", headers=good)[2])["frames_done"] >= 3
        assert re.search(rb'edge_sdk_frames_processed_total{camera="main"} [1-9]', fetch(base, "/metrics", headers=good)[2])
        assert fetch(base, "/healthz", headers=good)[0] == 200
        assert fetch(base, "/nope", headers=good)[0] == 404


@pytest.mark.slow
@pytest.mark.timeout(60, func_only=True)
def test_a_token_in_the_url_becomes_a_strict_cookie_and_leaves_the_address(bundle, video, tmp_path):
    settings = LiveViewSettings(listen="127.0.0.1:0", token_file=_secret_file(tmp_path, "token", TOKEN))
    with serving(bundle, video, settings) as view:
        base = _base(view)
        status, headers, body = fetch(base, f"/?token={TOKEN}&camera=1")
        assert status == 303 and headers["Location"] == "/?camera=1" and body == b""
        cookie = headers["Set-Cookie"]
        name, value = cookie.split(";")[0].split("=", 1)
        assert name == f"edge_sdk_live_{view.port}" and TOKEN not in cookie
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        assert fetch(base, f"/stats.json?token={TOKEN}")[1]["Location"] == "/stats.json"
        elsewhere = fetch(base, f"//elsewhere.example/x?token={TOKEN}")[1]["Location"]
        assert elsewhere.startswith("/") and not elsewhere.startswith("//"), elsewhere  # never off to another site
        jar = {"Cookie": f"other=1; {name}={value}"}
        assert json.loads(fetch(base, "/stats.json", headers=jar)[2])["frames_done"] >= 3
        assert fetch(base, "/stream.mjpg", headers=jar)[0] == 200
        assert fetch(base, "/stats.json", headers={"Cookie": f"{name}={value[:-1]}0"})[0] == 401
        assert fetch(base, "/stats.json", headers={"Cookie": f"edge_sdk_live_1={value}"})[0] == 401  # another port's
        assert fetch(base, f"/?token={TOKEN}x")[0] == 401


@pytest.mark.slow
@pytest.mark.timeout(60, func_only=True)
def test_a_password_is_asked_for_with_basic_and_metrics_can_be_public(bundle, video, tmp_path):
    settings = LiveViewSettings(listen="127.0.0.1:0", username="ops", metrics_public=True,
                                password_file=_secret_file(tmp_path, "password", PASSWORD))
    with serving(bundle, video, settings) as view:
        base = _base(view)
        assert "user 'ops' and password required" in view.notice
        for path in ("/", "/stream.mjpg", "/stats.json"):
            status, headers, body = fetch(base, path)
            assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="edge-sdk live view", charset="UTF-8"'
            _assert_leaks_nothing(body)
            assert fetch(base, path, headers={"Authorization": _basic("ops", PASSWORD)})[0] == 200
        for wrong in (_basic("ops", PASSWORD + "!"), _basic("edge", PASSWORD), f"Bearer {PASSWORD}", "Basic %%%"):
            assert fetch(base, "/stats.json", headers={"Authorization": wrong})[0] == 401, wrong
        assert fetch(base, f"/?token={quote(PASSWORD)}")[0] == 401
        assert fetch(base, "/healthz")[0] == 200
        assert re.search(rb'edge_sdk_frames_processed_total{camera="main"} [1-9]', fetch(base, "/metrics")[2])


@pytest.mark.slow
@pytest.mark.timeout(60, func_only=True)
def test_wrong_guesses_from_one_address_are_throttled_and_others_are_not(bundle, video, tmp_path):
    settings = LiveViewSettings(listen="127.0.0.1:0", token_file=_secret_file(tmp_path, "token", TOKEN))
    with serving(bundle, video, settings) as view:
        base, good = _base(view), {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(MAX_FAILURES + 5):  # no credential at all is a question, not a guess
            assert fetch(base, "/stats.json")[0] == 401
        for guess in range(MAX_FAILURES):
            assert fetch(base, "/stats.json", headers={"Authorization": f"Bearer guess-{guess}"})[0] == 401
        status, headers, body = fetch(base, "/stats.json", headers=good)
        assert status == 429 and 0 < int(headers["Retry-After"]) <= 61 and b"too many wrong credentials" in body
        _assert_leaks_nothing(body)
        assert fetch(base, "/stats.json", headers=good, source="127.0.0.2")[0] == 200  # another address


@pytest.mark.slow
@pytest.mark.timeout(60, func_only=True)
def test_without_a_credential_the_view_listens_on_loopback_and_says_so(bundle, video):
    with serving(bundle, video, LiveViewSettings(listen=":0")) as view:
        assert view.host == "127.0.0.1" and view.url == f"http://127.0.0.1:{view.port}/"
        assert "listening on 127.0.0.1 only, not every interface: no token or password given" in view.notice
        assert "$EDGE_SDK_HTTP_TOKEN" in view.notice
        assert all(fetch(_base(view), path)[0] == 200 for path in PATHS if path != "/stream.mjpg")
        assert fetch(_base(view), "/stream.mjpg")[0] == 200
    with serving(bundle, video, LiveViewSettings(listen="127.0.0.1:0")) as view:
        assert view.notice == "this machine only: no token or password given"
    if socket.has_ipv6 and _can_bind("::1"):
        with serving(bundle, video, LiveViewSettings(listen="[::]:0")) as view:
            assert view.host == "::1" and view.url == f"http://[::1]:{view.port}/" and "on ::1 only" in view.notice


def _can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind((host, 0))
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(60, func_only=True)
def test_with_a_credential_the_view_listens_where_asked(bundle, video, monkeypatch):
    monkeypatch.setenv("EDGE_SDK_HTTP_TOKEN", TOKEN)
    with serving(bundle, video, LiveViewSettings(listen=":0")) as view:
        assert view.host == "0.0.0.0" and view.notice.startswith("every interface; token required ($EDGE_SDK_HTTP_TOKEN)")
        assert "sent in clear text" in view.notice
        assert fetch(f"http://127.0.0.1:{view.port}", "/healthz", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


@pytest.mark.slow
@pytest.mark.timeout(60, func_only=True)
def test_https_with_a_generated_certificate(bundle, video, tmp_path):
    pki = make_pki(tmp_path / "pki", devices=())
    settings = LiveViewSettings(listen="127.0.0.1:0", token_file=_secret_file(tmp_path, "token", TOKEN),
                                cert_file=pki.server_cert, key_file=pki.server_key)
    with serving(bundle, video, settings) as view:
        assert view.url == f"https://127.0.0.1:{view.port}/"
        base, good = view.url.rstrip("/"), {"Authorization": f"Bearer {TOKEN}"}
        silent = socket.create_connection(("127.0.0.1", view.port))  # connects, never says hello
        try:
            assert fetch(base, "/healthz", ca=pki.ca_cert, timeout=4)[0] == 401
            assert json.loads(fetch(base, "/stats.json", ca=pki.ca_cert, headers=good)[2])["frames_done"] >= 3
        finally:
            silent.close()
        assert "Secure" in fetch(base, f"/?token={TOKEN}", ca=pki.ca_cert)[1]["Set-Cookie"]
        with pytest.raises(ssl.SSLCertVerificationError):
            fetch(base, "/healthz", ca=pki.foreign_ca_cert)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            fetch(f"http://127.0.0.1:{view.port}", "/healthz")  # plain HTTP to the TLS port
        # A TLS viewer who leaves is let go even though no new frame comes to write.
        conn = http.client.HTTPSConnection("127.0.0.1", view.port, timeout=5, context=ssl.create_default_context(cafile=pki.ca_cert))
        conn.request("GET", "/stream.mjpg", headers=good)
        response = conn.getresponse()
        assert response.status == 200 and b"\xff\xd8" in response.read1(65536) + response.read1(65536)
        assert view.snapshot()["viewers"] == 1
        response.close()
        conn.close()
        deadline = time.monotonic() + 5
        while view.snapshot()["viewers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert view.snapshot()["viewers"] == 0


# -- through the CLI ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(90, func_only=True)
def test_edge_sdk_run_serves_loopback_without_a_credential_and_bad_settings_exit_2(bundle, video, tmp_path, capsys, monkeypatch):
    run = ["run", str(bundle), "--source", str(video), "--max-frames", "2"]
    assert main([*run, "--http", ":0"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"live view on http://127\.0\.0\.1:\d+/ \(listening on 127\.0\.0\.1 only, not every interface: "
                     r"no token or password given", err), err
    token, empty = _secret_file(tmp_path, "token", TOKEN), tmp_path / "empty"
    empty.write_text("")
    config = tmp_path / "run.yaml"
    config.write_text(f"http: {{listen: '127.0.0.1:1', token_file: {token}}}\n")
    assert main([*run, "--config", str(config), "--http", "127.0.0.1:0"]) == 0  # the flag moves it, the token stays
    assert "token required (token file" in capsys.readouterr().err
    monkeypatch.setenv("EDGE_SDK_HTTP_PASSWORD", PASSWORD)
    assert main([*run, "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edge-sdk: error: the live view got both a token (token file {token}) and a password ($EDGE_SDK_HTTP_PASSWORD); give one"], err
    monkeypatch.delenv("EDGE_SDK_HTTP_PASSWORD")
    for section, problem in [
        (f"{{token_file: {empty}}}", f"http.token_file: {empty} is empty"),
        (f"{{cert_file: {token}}}", "field 'http': cert_file and key_file go together"),
        (f"{{cert_file: {token}, key_file: {tmp_path / 'no.key'}}}", f"http.key_file: {tmp_path / 'no.key'} cannot be read"),
    ]:
        config.write_text(f"http: {section}\n")
        assert main([*run, "--config", str(config)]) == 2, section
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edge-sdk: error: ") and problem in err[0], err


# -- a real browser ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _run_served(bundle: Path, video: Path, root: Path, *, http: dict, env: dict | None = None):
    """``edge-sdk run --loop`` with the live view in a child process; yields its base URL."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.yaml").write_text(json.dumps({"http": http}))
    log = root / "stderr.txt"
    cmd = [sys.executable, "-m", "edge_sdk.cli", "run", str(bundle), "--source", str(video), "--loop",
           "--fps", "30", "--threshold", "0", "--config", str(root / "run.yaml")]
    environ = {k: v for k, v in os.environ.items() if k not in HTTP_ENV} | (env or {})
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=environ,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"live view on (http://127\.0\.0\.1:\d+)/", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        yield found.group(1)
    finally:
        interrupt(proc)
    assert "Traceback" not in log.read_text(), log.read_text()[-2000:]


def _assert_refused(driver, url: str, *, says: str) -> None:
    """The page at ``url`` shows ``says`` and nothing of the live view (no image, no counters)."""
    driver.get(url)
    assert driver.find_element("tag name", "body").text.strip() == says
    assert driver.execute_script("return document.images.length") == 0 and "stream.mjpg" not in driver.page_source


def _assert_live(driver, url: str) -> None:
    size = wait(lambda: driver.execute_script(
        "const i = document.querySelector('img.stream'); return i && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight];"),
        20, step=0.1, what="the stream's first frame in the <img>")
    assert tuple(size) == FRAME_SIZE

    def frames() -> int:
        return int(driver.find_element("id", "frames").text)

    first = wait(frames, 10, step=0.1, what="the stats panel's first refresh")
    wait(lambda: frames() > first, 10, step=0.1, what="the frame counter to grow")


@needs_browser
@pytest.mark.slow
@pytest.mark.timeout(120, func_only=True)
def test_headless_chromium_is_refused_without_the_token_and_shown_the_stream_with_it(bundle, video, tmp_path):
    http = {"listen": "127.0.0.1:0", "token_file": str(_secret_file(tmp_path, "token", TOKEN))}
    with _run_served(bundle, video, tmp_path / "token-run", http=http) as base, chromium() as driver:
        refusal = "401 Unauthorized: this live view needs its token ('Authorization: Bearer <token>', or ?token=<token> once)"
        _assert_refused(driver, base + "/", says=refusal)
        _assert_refused(driver, base + f"/?token={TOKEN}x", says=refusal)
        driver.get(base + f"/?token={TOKEN}")
        assert driver.current_url == base + "/"  # the token left the address bar
        _assert_live(driver, base + "/")
        cookie = driver.get_cookie(f"edge_sdk_live_{urlsplit(base).port}")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert driver.execute_script("return document.cookie") == ""  # out of reach of the page's scripts


@needs_browser
@pytest.mark.slow
@pytest.mark.timeout(120, func_only=True)
def test_headless_chromium_is_refused_without_the_password_and_shown_the_stream_with_it(bundle, video, tmp_path):
    env = {"EDGE_SDK_HTTP_PASSWORD": PASSWORD}
    with _run_served(bundle, video, tmp_path / "password-run", http={"listen": "127.0.0.1:0"}, env=env) as base, \
            chromium() as driver:
        _assert_refused(driver, base + "/", says="")  # headless Chromium holds its password prompt: a blank page
        driver.get(f"http://edge:{quote(PASSWORD + '!')}@{urlsplit(base).netloc}/")
        assert driver.execute_script("return document.images.length") == 0 and "stream.mjpg" not in driver.page_source
        # Credentials in the address are the scripted stand-in for typing them into the prompt.
        driver.get(f"http://edge:{quote(PASSWORD)}@{urlsplit(base).netloc}/")
        _assert_live(driver, base + "/")
