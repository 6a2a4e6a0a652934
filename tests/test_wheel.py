"""The wheel users install carries the device profiles, the bundle schema and the converters."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from support import ROOT


def test_wheel_contains_profiles_schema_and_converters(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("edge_sdk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    profiles = {p.name for p in (ROOT / "device_profiles").glob("*.yaml")}
    assert {"rpi4.yaml", "rpi5.yaml", "jetson-orin-nano.yaml", "coral-usb.yaml", "coral-devboard.yaml",
            "intel-cpu.yaml", "x86-cpu.yaml"} <= profiles
    assert {f"edge_sdk/device_profiles/{name}" for name in profiles} <= names
    assert "edge_sdk/schemas/edge-bundle.schema.json" in names
    assert "edge_sdk/converters/api.py" in names
    assert "edge_sdk/converters/assets/shapes_detector.keras" in names
    for module in ("samples/shapes.py", "samples/digits.py", "samples/detector.py", "demo/run.py", "demo/broker.py"):
        assert f"edge_sdk/{module}" in names
    assert "edge_sdk/cli.py" in names
    # Every package of the source tree ships (setuptools lists them by hand: a new one is easy to miss).
    packages = {p.parent.relative_to(ROOT / "edge_sdk").as_posix() for p in (ROOT / "edge_sdk").glob("*/__init__.py")}
    assert {"backends", "decoders", "sources", "tracking", "fleet"} <= packages
    missing = sorted(package for package in packages if f"edge_sdk/{package}/__init__.py" not in names)
    assert not missing, f"not in the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edge-sdk = edge_sdk.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_finds_its_profiles(tmp_path):
    """Unpacked as pip would install it, the package finds the profiles inside itself."""
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("edge_sdk-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import edge_sdk.profiles as p; "
        "assert p.__file__.startswith(sys.argv[1]), p.__file__; print(','.join(p.builtin_profile_names()))"
    )
    run = subprocess.run([sys.executable, "-I", "-c", code, str(site)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "rpi4" in run.stdout.split(",") and "coral-usb" in run.stdout.strip().split(",")
