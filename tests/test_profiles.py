"""Device profiles: the built-in ones load, user files fail with field-level messages, the CLI shows both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_sdk.cli import main
from edge_sdk.errors import EdgeSDKError, ProfileError
from edge_sdk.profiles import (
    DeviceProfile,
    Precision,
    Target,
    builtin_profile_names,
    list_profiles,
    load_profile,
    load_profile_file,
)
from support import ROOT, single_error_line

REPO_PROFILES = ROOT / "device_profiles"

# A complete, valid user profile; the bad-file cases below each change one thing.
VALID_USER_PROFILE = {
    "name": "my-board",
    "title": "My custom ARM board",
    "target": "tflite",
    "precision": "int8",
    "io_dtype": "uint8",
    "threads": 3,
    "max_input_size": 416,
    "memory_budget_mb": 768,
    "notes": "A board in the lab.",
}


def _write_profile(folder: Path, data: dict | str, name: str = "board.yaml") -> Path:
    path = folder / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


# --- built-in profiles -------------------------------------------------------------------------


def test_builtin_names_are_the_repository_yaml_files():
    expected = sorted(p.stem for p in REPO_PROFILES.glob("*.yaml"))
    assert expected, "the repository has no device profiles"
    assert builtin_profile_names() == expected
    # The devices DESIGN.md promises.
    for name in ("rpi4", "rpi5", "jetson-orin-nano", "coral-usb", "intel-cpu", "x86-cpu"):
        assert name in expected


@pytest.mark.parametrize("name", builtin_profile_names())
def test_every_builtin_profile_loads_and_validates(name):
    profile = load_profile(name)
    assert isinstance(profile, DeviceProfile)
    assert profile.name == name, "a built-in profile's name must be its file stem"
    assert profile.title.strip()
    # Re-validating the dumped data proves the file passed every cross-field rule, not just parsing.
    assert DeviceProfile.model_validate(profile.model_dump()) == profile
    if profile.target is Target.EDGETPU:
        assert profile.precision is Precision.INT8 and profile.require_full_integer
        assert profile.delegate, "an Edge TPU profile must name its delegate"
    if profile.target is Target.OPENVINO:
        assert profile.device in {"CPU", "GPU", "NPU", "AUTO"}


def test_list_profiles_returns_every_builtin_sorted():
    profiles = list_profiles()
    assert [p.name for p in profiles] == builtin_profile_names()


def test_builtin_profile_by_path_equals_by_name():
    assert load_profile(REPO_PROFILES / "rpi4.yaml") == load_profile("rpi4")


# --- CLI: profiles list / show -----------------------------------------------------------------


def test_cli_profiles_list_at_80_columns_shows_every_name_in_full(capsys, monkeypatch):
    # 80 columns is what rich assumes when stdout is not a terminal (pipes, CI) and a common
    # terminal width; the names are what users type next, so they must never be cut.
    monkeypatch.setenv("COLUMNS", "80")
    rc = main(["profiles", "list"])
    out = capsys.readouterr().out
    assert rc == 0
    missing = [name for name in builtin_profile_names() if name not in out]
    assert not missing, f"profile names missing or truncated in 'profiles list':\n{out}"


def test_cli_profiles_list_on_a_wide_terminal_shows_names_and_titles(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rc = main(["profiles", "list"])
    out = capsys.readouterr().out
    assert rc == 0
    for profile in list_profiles():
        assert profile.name in out
        assert profile.title in out


@pytest.mark.parametrize("name", ["rpi4", "coral-usb", "intel-cpu"])
def test_cli_profiles_show_prints_every_field(capsys, monkeypatch, name):
    monkeypatch.setenv("COLUMNS", "200")
    rc = main(["profiles", "show", name])
    out = capsys.readouterr().out
    assert rc == 0
    profile = load_profile(name)
    for field, value in profile.model_dump(mode="json").items():
        assert field in out
        if value is not None and field != "notes":
            assert str(value) in out


def test_unknown_profile_raises_profile_error_naming_it():
    with pytest.raises(ProfileError, match="no-such-board") as info:
        load_profile("no-such-board")
    assert isinstance(info.value, EdgeSDKError)
    assert "rpi4" in str(info.value), "the message should list the known profiles"


def test_cli_unknown_profile_is_rc2_and_one_line_naming_it(capsys):
    rc = main(["profiles", "show", "no-such-board"])
    assert rc == 2
    line = single_error_line(capsys)
    assert "no-such-board" in line


# --- user profile files --------------------------------------------------------------------------


def test_valid_user_profile_by_path(tmp_path):
    path = _write_profile(tmp_path, VALID_USER_PROFILE)
    profile = load_profile(str(path))
    assert profile.name == "my-board"
    assert profile.threads == 3
    assert profile.target is Target.TFLITE
    assert load_profile_file(path) == profile


def test_cli_shows_a_valid_user_profile_by_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = _write_profile(tmp_path, VALID_USER_PROFILE)
    rc = main(["profiles", "show", str(path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "my-board" in captured.out
    assert "My custom ARM board" in captured.out
    assert "768" in captured.out


def _with(**changes) -> dict:
    data = dict(VALID_USER_PROFILE)
    for key, value in changes.items():
        if value is _REMOVE:
            del data[key]
        else:
            data[key] = value
    return data


_REMOVE = object()

# (case id, file content, words the message must contain besides the file path)
BAD_PROFILES = [
    ("wrong-type", _with(threads="many"), ["threads"]),
    ("out-of-range", _with(threads=0), ["threads"]),
    ("unknown-field", _with(colour="blue"), ["colour", "unknown field"]),
    ("missing-field", _with(memory_budget_mb=_REMOVE), ["memory_budget_mb"]),
    ("bad-enum", _with(target="cuda"), ["target"]),
    (
        "edgetpu-fp32",
        _with(target="edgetpu", precision="fp32", io_dtype="uint8", require_full_integer=True,
              delegate="libedgetpu.so.1"),
        ["edgetpu", "precision"],
    ),
    ("full-integer-fp16", _with(precision="fp16", require_full_integer=True), ["require_full_integer"]),
    ("invalid-yaml", "name: my-board\ntitle: [unclosed\n  threads: 4\n", ["not valid YAML"]),
    ("not-a-mapping", "- rpi4\n- rpi5\n", ["mapping"]),
    ("empty-file", "", ["mapping"]),
]


@pytest.mark.parametrize(("content", "words"), [c[1:] for c in BAD_PROFILES], ids=[c[0] for c in BAD_PROFILES])
def test_bad_user_profile_names_the_file_and_the_field(tmp_path, content, words):
    path = _write_profile(tmp_path, content)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message


@pytest.mark.parametrize(("content", "words"), [c[1:] for c in BAD_PROFILES], ids=[c[0] for c in BAD_PROFILES])
def test_cli_bad_user_profile_is_rc2_and_one_line(tmp_path, capsys, content, words):
    path = _write_profile(tmp_path, content)
    rc = main(["profiles", "show", str(path)])
    assert rc == 2
    line = single_error_line(capsys)
    assert str(path) in line
    for word in words:
        assert word in line


def test_missing_user_profile_file_names_it(tmp_path, capsys):
    path = tmp_path / "nowhere" / "board.yaml"
    with pytest.raises(ProfileError, match="does not exist") as info:
        load_profile(path)
    assert str(path) in str(info.value)
    assert main(["profiles", "show", str(path)]) == 2
    assert str(path) in single_error_line(capsys)
