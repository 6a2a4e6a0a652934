"""Signed updates: keys, signatures, archive extraction that trusts nothing, and the atomic store."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile

import pytest

from edge_sdk.bundle import open_bundle
from edge_sdk.cli import main
from edge_sdk.errors import ConfigError, UpdateError
from edge_sdk.ota.archive import extract_archive, fetch_archive, member_names, pack_bundle
from edge_sdk.ota.keys import SIGNATURE_NAME, generate_keypair, load_public_keys, sign_bundle, verify_bundle_signature
from edge_sdk.ota.store import BundleStore
from support import bundles

MB = 2**20


@pytest.fixture
def keys(tmp_path):
    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    return {"key": tmp_path / "fleet.key", "pub": tmp_path / "fleet.pub", "other": tmp_path / "other.key",
            "trusted": load_public_keys([tmp_path / "fleet.pub"])}


def make_bundle(folder, *, name="tiny", version=None, key=None):
    bundles.make_bundle(folder, name=name)
    if key is not None:
        sign_bundle(folder, key, version=version)
    return folder


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def test_key_files_are_created_private_and_never_overwritten(tmp_path, keys):
    assert stat.S_IMODE(os.stat(keys["key"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys["pub"]).st_mode) == 0o644
    with pytest.raises(ConfigError, match="already exists"):
        generate_keypair(keys["key"], tmp_path / "x.pub")
    (tmp_path / "rsa.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_keys([tmp_path / "rsa.pub"])


def test_a_signature_verifies_and_any_change_breaks_it(tmp_path, keys):
    folder = make_bundle(tmp_path / "b", key=keys["key"], version=7)
    info = verify_bundle_signature(folder, keys["trusted"])
    assert info.version == 7 and len(info.manifest_sha256) == 64
    with pytest.raises(UpdateError, match="does not trust"):
        verify_bundle_signature(folder, load_public_keys([tmp_path / "other.pub"]))
    manifest = folder / "edge-bundle.json"
    manifest.write_text(manifest.read_text().replace('"tiny"', '"tinY"'))
    with pytest.raises(UpdateError, match="changed after signing"):
        verify_bundle_signature(folder, keys["trusted"])
    document = json.loads((folder / SIGNATURE_NAME).read_text())
    document["version"] = 99  # a forged version no longer matches the signature
    (folder / SIGNATURE_NAME).write_text(json.dumps(document))
    with pytest.raises(UpdateError, match="does not verify"):
        verify_bundle_signature(folder, keys["trusted"])
    (folder / SIGNATURE_NAME).write_text("{garbage")
    with pytest.raises(UpdateError, match="malformed"):
        verify_bundle_signature(folder, keys["trusted"])
    (folder / SIGNATURE_NAME).unlink()
    with pytest.raises(UpdateError, match="not signed"):
        verify_bundle_signature(folder, keys["trusted"])


def test_keys_and_sign_commands(tmp_path, capsys):
    assert main(["keys", "generate", "--out-dir", str(tmp_path), "--name", "ops"]) == 0
    assert "key id" in capsys.readouterr().out
    assert main(["keys", "generate", "--out-dir", str(tmp_path), "--name", "ops"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    folder = make_bundle(tmp_path / "b")
    assert main(["sign", str(folder), "--key", str(tmp_path / "ops.key"), "--version", "3"]) == 0
    assert "version 3" in capsys.readouterr().out
    assert main(["sign", str(folder), "--key", str(tmp_path / "ops.pub")]) == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err


def test_archives_round_trip_deterministically(tmp_path, keys):
    folder = make_bundle(tmp_path / "b", key=keys["key"])
    archive = pack_bundle(folder)
    assert archive == pack_bundle(folder)
    assert set(member_names(archive)) == {"edge-bundle.json", SIGNATURE_NAME, "model.tflite", "labels.txt"}
    extract_archive(archive, tmp_path / "out", max_bytes=MB)
    assert open_bundle(tmp_path / "out").manifest.name == "tiny"


@pytest.mark.parametrize(
    ("members", "error"),
    [
        ([member("../evil")], "outside the bundle"),
        ([member("a/../../evil")], "outside the bundle"),
        ([member("/etc/cron.d/evil")], "absolute path"),
        ([member("link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "link"),
        ([member("a"), member("hard", kind=tarfile.LNKTYPE, link="a")], "link"),
        ([member("dev", kind=tarfile.CHRTYPE)], "device or special file"),
        ([member("fifo", kind=tarfile.FIFOTYPE)], "device or special file"),
        ([member("a"), member("a")], "appears twice"),
        ([member(f"f{i}") for i in range(70)], "more than 64 files"),
    ],
)
def test_unsafe_archives_are_refused_and_nothing_escapes(tmp_path, members, error):
    with pytest.raises(UpdateError, match=error):
        extract_archive(tar_gz(members), tmp_path / "out", max_bytes=MB)
    assert not (tmp_path / "evil").exists()


def test_a_gzip_bomb_stops_at_the_cap(tmp_path):
    info = tarfile.TarInfo("model.tflite")
    info.size = 200 * MB
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as gz:
        gz.write(info.tobuf(format=tarfile.GNU_FORMAT))
        zeros = bytes(MB)
        for _ in range(200):
            gz.write(zeros)
    bomb = buffer.getvalue()
    assert len(bomb) < 1 * MB
    with pytest.raises(UpdateError, match="more than"):
        extract_archive(bomb, tmp_path / "out", max_bytes=32 * MB)
    written = sum(f.stat().st_size for f in (tmp_path / "out").rglob("*") if f.is_file())
    assert written <= 32 * MB


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, b"\x1f\x8b" + os.urandom(500), gzip.compress(b"not a tar" * 100)])
def test_garbage_archives_are_one_line_errors(tmp_path, data):
    with pytest.raises(UpdateError):
        extract_archive(data, tmp_path / "out", max_bytes=MB)


def test_the_store_installs_refuses_rollbacks_and_keeps_the_last_good_model(tmp_path, keys):
    store = BundleStore(tmp_path / "store")
    assert store.current() is None
    v1 = pack_bundle(make_bundle(tmp_path / "v1", name="one", key=keys["key"], version=1))
    v2 = pack_bundle(make_bundle(tmp_path / "v2", name="two", key=keys["key"], version=2))
    first = store.install(v1, public_keys=keys["trusted"], max_bytes=MB)
    assert open_bundle(store.current()).manifest.name == "one" and first.old_sha256 is None
    with pytest.raises(UpdateError, match="trial run: RuntimeError: boom"):
        store.install(v2, public_keys=keys["trusted"], max_bytes=MB, check=lambda path: (_ for _ in ()).throw(RuntimeError("boom")))
    assert open_bundle(store.current()).manifest.name == "one"
    second = store.install(v2, public_keys=keys["trusted"], max_bytes=MB)
    assert open_bundle(store.current()).manifest.name == "two" and second.version == 2
    with pytest.raises(UpdateError, match="not newer"):
        store.install(v1, public_keys=keys["trusted"], max_bytes=MB)
    unsigned = pack_bundle(make_bundle(tmp_path / "v3", name="three"))
    with pytest.raises(UpdateError, match="not signed"):
        store.install(unsigned, public_keys=keys["trusted"], max_bytes=MB)
    foreign = pack_bundle(make_bundle(tmp_path / "v4", name="four", key=keys["other"], version=4))
    with pytest.raises(UpdateError, match="does not trust"):
        store.install(foreign, public_keys=keys["trusted"], max_bytes=MB)
    assert store.rollback().name.startswith("1-")
    assert open_bundle(store.current()).manifest.name == "one"
    assert not list(store.root.glob(".staging-*"))


def test_a_tampered_model_file_is_refused_even_with_a_good_signature(tmp_path, keys):
    folder = make_bundle(tmp_path / "b", key=keys["key"], version=5)
    model = bytearray((folder / "model.tflite").read_bytes())
    model[100] ^= 0xFF  # same size, one byte changed
    (folder / "model.tflite").write_bytes(bytes(model))
    archive = tar_gz([member(name, (folder / name).read_bytes()) for name in ("edge-bundle.json", SIGNATURE_NAME, "model.tflite", "labels.txt")])
    store = BundleStore(tmp_path / "store")
    with pytest.raises(UpdateError, match="does not match its sha256") as refused:
        store.install(archive, public_keys=keys["trusted"], max_bytes=MB)
    assert store.current() is None and ".staging" not in str(refused.value)


_INSTALL_AND_HANG = """
import sys, time
from pathlib import Path
from edge_sdk.ota.keys import load_public_keys
from edge_sdk.ota.store import BundleStore
store = BundleStore(Path(sys.argv[1]))
def check(path):
    print("checking", flush=True)
    time.sleep(60)
store.install(Path(sys.argv[2]).read_bytes(), public_keys=load_public_keys([sys.argv[3]]), check=check, max_bytes=2**20)
"""


def test_a_kill_in_the_middle_of_an_install_leaves_the_last_good_model(tmp_path, keys):
    store = BundleStore(tmp_path / "store")
    store.install(pack_bundle(make_bundle(tmp_path / "v1", name="one", key=keys["key"], version=1)), public_keys=keys["trusted"], max_bytes=MB)
    archive = tmp_path / "v2.tar.gz"
    archive.write_bytes(pack_bundle(make_bundle(tmp_path / "v2", name="two", key=keys["key"], version=2)))
    child = subprocess.Popen([sys.executable, "-c", _INSTALL_AND_HANG, str(store.root), str(archive), str(keys["pub"])],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "checking"
        assert list(store.root.glob(".staging-*"))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    reopened = BundleStore(store.root)
    assert open_bundle(reopened.current()).manifest.name == "one"
    assert not list(reopened.root.glob(".staging-*"))


def test_fetch_refuses_plain_http_and_oversized_downloads(tmp_path):
    for url in ("http://127.0.0.1/b.tar.gz", "file:///etc/passwd", "ftp://x/b"):
        with pytest.raises(UpdateError, match="https"):
            fetch_archive(url, max_bytes=MB)


def test_fetch_over_https_checks_the_certificate_and_the_size(tmp_path):
    import http.server
    import ssl
    import threading

    from support.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "b.tar.gz").write_bytes(b"\x1f\x8b" + b"x" * 5000)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/b.tar.gz"
    try:
        assert len(fetch_archive(url, max_bytes=MB, ca_file=pki.ca_cert)) == 5002
        with pytest.raises(UpdateError, match="larger than"):
            fetch_archive(url, max_bytes=1000, ca_file=pki.ca_cert)
        with pytest.raises(UpdateError, match="certificate"):
            fetch_archive(url, max_bytes=MB)  # the system CAs do not know the test CA
    finally:
        server.shutdown()
