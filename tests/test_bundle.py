"""The bundle format: written atomically, verified on load, refused with a message that names the problem."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pytest

from edge_sdk.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    check_destination,
    manifest_json_schema,
    open_bundle,
    schema_path,
    write_bundle,
)
from edge_sdk.cli import main
from edge_sdk.errors import BundleError, EdgeSDKError
from support import ROOT, single_error_line, snapshot
from support.bundles import BUNDLE_NAME, LABELS, PLACEHOLDER_MODEL_BYTES, bundle_files, make_bundle, manifest_fields

COMMITTED_SCHEMA = ROOT / "edge_sdk" / "schemas" / "edge-bundle.schema.json"


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _manifest_data(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))


def _write_manifest_data(bundle: Path, data: dict) -> None:
    (bundle / MANIFEST_NAME).write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    out = tmp_path / "bundle"
    make_bundle(out)
    return out


# --- round trip and inspect -----------------------------------------------------------------------


def test_round_trip(tmp_path):
    out = tmp_path / "out" / "bundle"
    written = make_bundle(out)
    opened = open_bundle(out)

    assert opened.path == out
    assert opened.manifest == written.manifest
    assert opened.manifest.schema_version == SCHEMA_VERSION
    assert opened.manifest.name == BUNDLE_NAME
    assert opened.manifest.profile.name == "x86-cpu"
    assert opened.manifest.preprocessing.width == 32
    assert opened.model_path.read_bytes() == PLACEHOLDER_MODEL_BYTES
    assert opened.labels() == LABELS

    files, roles = bundle_files()
    entries = {e.path: e for e in opened.manifest.files}
    assert set(entries) == set(files)
    for name, payload in files.items():
        assert (out / name).read_bytes() == payload
        assert entries[name].sha256 == hashlib.sha256(payload).hexdigest()
        assert entries[name].bytes == len(payload)
        assert entries[name].role == roles[name]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, *files])
    assert _leftovers(out.parent) == []


def test_written_manifest_validates_against_committed_schema(bundle_dir):
    schema = json.loads(COMMITTED_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(_manifest_data(bundle_dir), schema)


def test_committed_schema_equals_generated_schema():
    assert schema_path() == COMMITTED_SCHEMA
    committed = json.loads(COMMITTED_SCHEMA.read_text(encoding="utf-8"))
    assert committed == manifest_json_schema(), (
        "edge_sdk/schemas/edge-bundle.schema.json is stale; regenerate it from manifest_json_schema()"
    )


def test_cli_inspect_prints_the_bundle(bundle_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rc = main(["inspect", str(bundle_dir)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert BUNDLE_NAME in captured.out
    assert "model.tflite" in captured.out
    assert "x86-cpu" in captured.out


def test_cli_inspect_json_is_valid_and_matches_the_schema(bundle_dir, capsys):
    rc = main(["inspect", str(bundle_dir), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(captured.out)
    jsonschema.validate(data, json.loads(COMMITTED_SCHEMA.read_text(encoding="utf-8")))
    assert data["name"] == BUNDLE_NAME
    assert data == _manifest_data(bundle_dir)
    assert Manifest.model_validate(data) == open_bundle(bundle_dir).manifest


# --- refused on load --------------------------------------------------------------------------------


@pytest.mark.parametrize("member", ["model.tflite", "labels.txt"])
def test_tampered_file_is_refused_naming_it(bundle_dir, capsys, member):
    path = bundle_dir / member
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(BundleError) as info:
        open_bundle(bundle_dir)
    message = str(info.value)
    assert member in message
    assert "sha256" in message

    assert main(["inspect", str(bundle_dir)]) == 2
    line = single_error_line(capsys)
    assert member in line
    assert str(bundle_dir) in line


def test_truncated_file_is_refused_as_truncated(bundle_dir, capsys):
    path = bundle_dir / "model.tflite"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BundleError) as info:
        open_bundle(bundle_dir)
    assert "truncated" in str(info.value)
    assert "model.tflite" in str(info.value)

    assert main(["inspect", str(bundle_dir)]) == 2
    line = single_error_line(capsys)
    assert "truncated" in line and "model.tflite" in line


def test_grown_file_is_refused(bundle_dir):
    path = bundle_dir / "labels.txt"
    path.write_bytes(path.read_bytes() + b"fish\n")
    with pytest.raises(BundleError, match="labels.txt"):
        open_bundle(bundle_dir)


def test_missing_file_is_refused_naming_it(bundle_dir, capsys):
    (bundle_dir / "labels.txt").unlink()
    with pytest.raises(BundleError) as info:
        open_bundle(bundle_dir)
    assert "labels.txt" in str(info.value)
    assert "missing" in str(info.value)

    assert main(["inspect", str(bundle_dir)]) == 2
    assert "labels.txt" in single_error_line(capsys)


def test_missing_bundle_folder(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(missing)
    assert main(["inspect", str(missing)]) == 2
    assert str(missing) in single_error_line(capsys)


def test_file_instead_of_bundle_folder(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(PLACEHOLDER_MODEL_BYTES)
    with pytest.raises(BundleError, match="not a folder"):
        open_bundle(path)


def test_folder_without_manifest(tmp_path):
    folder = tmp_path / "not-a-bundle"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(PLACEHOLDER_MODEL_BYTES)
    with pytest.raises(BundleError, match=MANIFEST_NAME) as info:
        open_bundle(folder)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("text", ['{"schema_version": 1, "name": ', "", "\x00\x01", "[1, 2"])
def test_manifest_with_bad_json(bundle_dir, capsys, text):
    (bundle_dir / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(BundleError) as info:
        open_bundle(bundle_dir)
    assert MANIFEST_NAME in str(info.value)
    assert "JSON" in str(info.value)

    assert main(["inspect", str(bundle_dir)]) == 2
    line = single_error_line(capsys)
    assert MANIFEST_NAME in line and str(bundle_dir) in line


def test_manifest_that_is_not_an_object(bundle_dir):
    (bundle_dir / MANIFEST_NAME).write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(BundleError, match="JSON object"):
        open_bundle(bundle_dir)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "1", None])
def test_wrong_schema_version(bundle_dir, capsys, version):
    data = _manifest_data(bundle_dir)
    data["schema_version"] = version
    _write_manifest_data(bundle_dir, data)
    with pytest.raises(BundleError) as info:
        open_bundle(bundle_dir)
    assert "schema_version" in str(info.value)
    assert repr(version) in str(info.value)

    assert main(["inspect", str(bundle_dir)]) == 2
    assert "schema_version" in single_error_line(capsys)


def test_missing_schema_version(bundle_dir):
    data = _manifest_data(bundle_dir)
    del data["schema_version"]
    _write_manifest_data(bundle_dir, data)
    with pytest.raises(BundleError, match="schema_version"):
        open_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_classes", 0), ("target", "cuda"), ("colour", "blue"), ("inputs", [])],
)
def test_manifest_with_an_invalid_field_names_it(bundle_dir, capsys, field, value):
    data = _manifest_data(bundle_dir)
    data[field] = value
    _write_manifest_data(bundle_dir, data)
    with pytest.raises(BundleError) as info:
        open_bundle(bundle_dir)
    assert f"'{field}'" in str(info.value)
    assert main(["inspect", str(bundle_dir)]) == 2
    assert field in single_error_line(capsys)


def test_model_file_not_listed_with_a_hash_is_refused(bundle_dir):
    data = _manifest_data(bundle_dir)
    data["files"] = [e for e in data["files"] if e["path"] != "model.tflite"]
    _write_manifest_data(bundle_dir, data)
    with pytest.raises(BundleError, match="model.tflite"):
        open_bundle(bundle_dir)


@pytest.mark.parametrize("kind", ["parent", "nested-parent", "absolute"])
def test_manifest_file_paths_outside_the_bundle_are_refused(tmp_path, bundle_dir, capsys, kind):
    # The outside file really exists with a matching hash and size, so only the path check can refuse it.
    outside = tmp_path / "x"
    outside.write_bytes(b"secret outside the bundle\n")
    relative = {"parent": "../x", "nested-parent": "sub/../../x", "absolute": str(outside)}[kind]
    data = _manifest_data(bundle_dir)
    data["files"].append(
        {
            "path": relative,
            "sha256": hashlib.sha256(outside.read_bytes()).hexdigest(),
            "bytes": outside.stat().st_size,
            "role": "artifact",
        }
    )
    _write_manifest_data(bundle_dir, data)

    with pytest.raises(BundleError) as info:
        open_bundle(bundle_dir)
    assert relative in str(info.value)
    assert "outside" in str(info.value)
    assert main(["inspect", str(bundle_dir)]) == 2
    assert relative in single_error_line(capsys)


def test_bundle_error_is_an_edge_sdk_error():
    assert issubclass(BundleError, EdgeSDKError)
    assert BundleError.exit_code == 2


# --- check_destination ----------------------------------------------------------------------------


def test_check_destination_refuses_a_non_empty_non_bundle_folder(tmp_path):
    precious = tmp_path / "photos"
    (precious / "2024").mkdir(parents=True)
    (precious / "2024" / "beach.jpg").write_bytes(b"\xff\xd8 pretend jpeg")
    (precious / "notes.txt").write_text("do not delete\n")
    before = snapshot(precious)

    with pytest.raises(BundleError) as info:
        check_destination(precious)
    assert str(precious) in str(info.value)
    assert "refusing" in str(info.value)
    assert snapshot(precious) == before


def test_check_destination_refuses_a_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(PLACEHOLDER_MODEL_BYTES)
    with pytest.raises(BundleError, match="is a file") as info:
        check_destination(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == PLACEHOLDER_MODEL_BYTES


def test_check_destination_refuses_a_path_below_a_file(tmp_path):
    parent = tmp_path / "a-file"
    parent.write_text("x")
    with pytest.raises(BundleError, match="not a folder"):
        check_destination(parent / "bundle")


def test_check_destination_accepts_absent_empty_and_old_bundle(tmp_path, bundle_dir):
    absent = tmp_path / "new" / "bundle"
    assert check_destination(absent) == absent
    assert not absent.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_destination(empty) == empty

    before = snapshot(bundle_dir)
    assert check_destination(bundle_dir) == bundle_dir
    assert snapshot(bundle_dir) == before


# --- write_bundle: atomic replacement, failures leave nothing behind -----------------------------------


def test_write_bundle_into_an_empty_folder(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    make_bundle(out)
    assert open_bundle(out).manifest.name == BUNDLE_NAME
    assert _leftovers(tmp_path) == []


def test_write_bundle_refuses_a_non_empty_non_bundle_folder(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "notes.txt").write_text("do not delete\n")
    before = snapshot(precious)
    with pytest.raises(BundleError, match="refusing"):
        make_bundle(precious)
    assert snapshot(precious) == before
    assert _leftovers(tmp_path) == []


def test_write_bundle_replaces_an_old_bundle_completely(tmp_path):
    out = tmp_path / "bundle"
    files, roles = bundle_files()
    old_files = dict(files, **{"old-notes.txt": b"from the previous conversion\n"})
    write_bundle(out, files=old_files, roles=roles, manifest_fields=manifest_fields(name="old-model"))
    assert open_bundle(out).manifest.name == "old-model"

    new = make_bundle(out, name="new-model")

    opened = open_bundle(out)
    assert opened.manifest.name == "new-model"
    assert opened.manifest == new.manifest
    assert not (out / "old-notes.txt").exists(), "the old bundle's files must not survive the swap"
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, *files])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"], "no .tmp-/.old- folders may remain"


@pytest.mark.parametrize("existing", ["absent", "old-bundle"])
def test_invalid_manifest_field_leaves_the_destination_untouched(tmp_path, existing):
    out = tmp_path / "bundle"
    if existing == "old-bundle":
        make_bundle(out, name="old-model")
    before = snapshot(out) if out.exists() else None

    with pytest.raises(BundleError, match="num_classes"):
        make_bundle(out, num_classes=0)

    if before is None:
        assert not out.exists()
        assert list(tmp_path.iterdir()) == []
    else:
        assert snapshot(out) == before
        assert open_bundle(out).manifest.name == "old-model"
    assert _leftovers(tmp_path) == []


def test_failure_while_writing_files_leaves_the_destination_untouched(tmp_path):
    out = tmp_path / "bundle"
    make_bundle(out, name="old-model")
    before = snapshot(out)
    files, roles = bundle_files()
    files["../escape.bin"] = b"must never be written"

    with pytest.raises(BundleError, match="outside"):
        write_bundle(out, files=files, roles=roles, manifest_fields=manifest_fields(name="new-model"))

    assert snapshot(out) == before
    assert open_bundle(out).manifest.name == "old-model"
    assert not (tmp_path / "escape.bin").exists()
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


@pytest.mark.parametrize(
    "case",
    ["model-file-not-among-files", "labels-file-not-among-files", "a-file-named-like-the-manifest"],
)
def test_write_bundle_never_leaves_a_bundle_that_open_bundle_refuses(tmp_path, case):
    out = tmp_path / "bundle"
    files, roles = bundle_files()
    fields = manifest_fields()
    if case == "model-file-not-among-files":
        fields["model_file"] = "model_edgetpu.tflite"
    elif case == "labels-file-not-among-files":
        del files["labels.txt"]
    else:
        files[MANIFEST_NAME] = b'{"not": "the manifest"}'

    try:
        write_bundle(out, files=files, roles=roles, manifest_fields=fields)
    except BundleError:
        assert not out.exists(), "a refused write must not create the destination"
        assert _leftovers(tmp_path) == []
        return
    # write_bundle accepted the input, so what it wrote must open.
    try:
        open_bundle(out)
    except BundleError as exc:
        pytest.fail(f"write_bundle wrote a bundle that open_bundle refuses: {exc}")
