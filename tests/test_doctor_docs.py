"""`edge-sdk doctor` points into README.md, and README's device sections name real things.

A failed doctor check prints ``see README#<anchor>``; these tests make sure every anchor doctor can
print is a heading in README's troubleshooting section, and that the install lines, profiles and
commands of the "On your device" section exist in this repository.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import typer

from edge_sdk import doctor
from edge_sdk.cli import app, main
from support import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"^\s*(```|~~~)")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code blocks."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match and not fenced:
            found.append((len(match.group(1)), match.group(2)))
    return found


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text, lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)  # a code span keeps its text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # so does a link
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> list[str]:
    """Every heading's anchor in document order; repeats get -1, -2, ... as on GitHub."""
    seen: Counter[str] = Counter()
    out = []
    for _, text in headings(markdown):
        base = github_anchor(text)
        out.append(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return out


def section(markdown: str, title: str) -> str:
    """The text of the level-2 section called ``title``, up to the next level-2 heading."""
    lines, inside, fenced = [], False, False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip() == title
            continue
        if inside:
            lines.append(line)
    assert lines, f"README.md has no '## {title}' section"
    return "\n".join(lines)


def code_lines(markdown: str) -> list[str]:
    """The lines inside fenced code blocks."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            lines.append(line)
    return lines


def pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_anchor_rule_matches_github():
    assert github_anchor("On the device: `edge-sdk run`") == "on-the-device-edge-sdk-run"
    assert github_anchor("Keras 3 and tf-keras") == "keras-3-and-tf-keras"
    assert github_anchor("Python older than 3.10") == "python-older-than-310"
    assert github_anchor("NumPy 1.x and 2.x modules mixed") == "numpy-1x-and-2x-modules-mixed"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n### B, c!\n") == ["a", "a-1", "b-c"]


def test_every_anchor_doctor_can_print_is_a_troubleshooting_heading(readme):
    troubleshooting = set(anchors(section(readme, "Troubleshooting")))
    missing = sorted(t.value for t in doctor.Trouble if t.value not in troubleshooting)
    assert not missing, f"doctor points to README anchors that no Troubleshooting heading produces: {missing}"
    # ...and no other heading in the README makes the same anchor, so the link lands on that entry.
    counts = Counter(github_anchor(text) for _, text in headings(readme))
    repeated = {t.value: counts[t.value] for t in doctor.Trouble if counts[t.value] != 1}
    assert not repeated, f"anchors made by more than one heading: {repeated}"


def test_every_failed_check_carries_a_pointer_with_a_real_anchor(readme):
    existing = set(anchors(readme))
    checks = doctor.diagnose()
    failed = [c for c in checks if not c.ok]
    assert failed, "expected at least the Edge TPU check to fail on a machine without a Coral"
    for check in failed:
        match = re.fullmatch(r"see README#([\w-]+)", check.pointer)
        assert match and match.group(1) in existing, (check.name, check.pointer)
    assert all(c.pointer == "" for c in checks if c.ok)


def test_doctor_here_prints_the_edge_tpu_pointer(readme, capsys):
    edgetpu = next(c for c in doctor.diagnose() if c.name == "edge tpu")
    if edgetpu.ok:
        pytest.skip("an Edge TPU answered on this machine")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("│ edge tpu "))
    assert row.split("│")[2].strip() == "-", row
    pointer = f"see README#{doctor.Trouble.EDGE_TPU.value}"
    assert pointer in out, out
    assert doctor.Trouble.EDGE_TPU.value in anchors(readme)


def test_a_bundle_that_fails_to_open_points_to_the_bundle_entry(tmp_path, capsys):
    assert main(["doctor", str(tmp_path / "no-such-bundle")]) == 1
    out = capsys.readouterr().out
    assert f"see README#{doctor.Trouble.BUNDLE.value}" in out, out


def test_install_lines_name_extras_that_exist(readme):
    devices = code_lines(section(readme, "On your device"))
    installs = [line for line in devices if re.search(r"\bpip install\b", line)]
    assert installs, "the device sections have no pip install line"
    named = {extra.strip() for line in installs for group in re.findall(r"\[([\w,\s-]+)\]", line) for extra in group.split(",")}
    assert named, "no install line names an extra; expected at least [openvino]"
    extras = set(pyproject()["project"]["optional-dependencies"])
    assert named <= extras, f"install lines name extras that pyproject.toml lacks: {sorted(named - extras)}"


def test_wheel_names_match_the_package_version(readme):
    version = pyproject()["project"]["version"]
    wheels = set(re.findall(r"edge_sdk-([\w.]+)-py3-none-any\.whl", section(readme, "On your device")))
    assert wheels == {version}, f"README names wheels of versions {sorted(wheels)}, pyproject.toml is at {version}"


def test_device_sections_use_real_profiles_and_commands(readme):
    text = "\n".join(code_lines(section(readme, "On your device")))
    profiles = set(re.findall(r"--profile\s+([\w.-]+)", text))
    assert profiles, "no convert command with --profile in the device sections"
    shipped = {p.stem for p in (ROOT / "device_profiles").glob("*.yaml")}
    assert profiles <= shipped, f"unknown profiles: {sorted(profiles - shipped)}"
    used = set(re.findall(r"(?:^|[;&|]\s*)edge-sdk\s+([a-z]+)", text, flags=re.MULTILINE))
    commands = set(typer.main.get_command(app).commands)
    assert used and used <= commands, f"unknown edge-sdk commands: {sorted(used - commands)}"


def test_readme_links_to_its_own_headings_resolve(readme):
    existing = set(anchors(readme))
    prose = "\n".join(line for line in readme.splitlines() if line not in set(code_lines(readme)))
    targets = set(re.findall(r"\]\(#([^)\s]+)\)", prose))
    assert targets, "expected the README to link to its own sections"
    assert targets <= existing, f"links to missing headings: {sorted(targets - existing)}"
