"""``edge-sdk rollout`` and ``edge-sdk fleet``: staged model updates over a fleet, and what it runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edge_sdk.cli_fleet import BROKER, CA_FILE, CERT_FILE, KEY_FILE, PASSWORD_FILE, ROOT, USERNAME
from edge_sdk.cli_fleet import _settings as fleet_settings


def _settings(broker: str, root: str, ca_file, cert_file, key_file, username, password_file):
    return fleet_settings(broker, "fleet", f"{root}/{{device_id}}/", ca_file, cert_file, key_file, username, password_file)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _report(state, *, json_output: bool) -> None:
    import json

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if json_output:
        typer.echo(json.dumps(state.to_json(), indent=1))
        return
    bundle = state.bundle
    table = Table(title=f"rollout of {bundle.name} version {bundle.version} ({_short(bundle.model_sha256)}): {state.status.value}")
    for column in ("device", "ring", "state", "reason", "model"):
        table.add_column(column)
    for ring in state.rings:
        for device in ring:
            record = state.devices[device]
            table.add_row(device, str(record.ring), record.state.value, Text(record.reason or ""),
                          f"{_short(record.old_sha256)} -> {_short(record.new_sha256 or bundle.model_sha256)}")
    console = Console()
    console.print(table)
    if state.reason:
        console.print(Text(f"aborted: {state.reason}"))


def rollout(
    bundle: Path = typer.Argument(..., help="Signed bundle folder (see 'edge-sdk sign')."),
    broker: str = BROKER,
    public_key: List[Path] = typer.Option(..., "--public-key", help="The fleet's update key (repeatable); the bundle must verify against one."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Comma-separated device ids, canaries first."),
    devices_file: Optional[Path] = typer.Option(None, "--devices-file", help="File with one device id a line, canaries first."),
    match: Optional[str] = typer.Option(None, "--match", help="Pattern over the devices the broker has seen, e.g. 'cam-*' (sorted by id)."),
    stages: str = typer.Option("5%,25%,100%", "--stages", help="Share of the devices reached by the end of each ring."),
    max_failed: str = typer.Option("20%", "--max-failed", help="Share of a ring that may fail without aborting."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds a device has to install the bundle and pass its probation."),
    state_file: Optional[Path] = typer.Option(None, "--state", help="State file (default: per bundle under ~/.local/state/edge-sdk/rollouts)."),
    json_output: bool = typer.Option(False, "--json", help="The report as JSON."),
    wait: float = typer.Option(2.0, "--wait", help="Seconds to listen for the devices' retained messages."),
    root: str = ROOT,
    ca_file: Optional[Path] = CA_FILE,
    cert_file: Optional[Path] = CERT_FILE,
    key_file: Optional[Path] = KEY_FILE,
    username: Optional[str] = USERNAME,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """Push a signed bundle ring by ring, abort and roll back when a ring fails; run again to resume.

    Exits 0 when every ring succeeded, 1 when the rollout aborted."""
    from edge_sdk.errors import ConfigError, RolloutError
    from edge_sdk.fleet import rollout as plan

    stage_list = plan.parse_stages(stages)
    threshold = plan.parse_max_failed(max_failed)
    if not timeout > 0:
        raise ConfigError(f"--timeout must be positive, not {timeout:g}")
    if sum(x is not None for x in (devices, devices_file, match)) != 1:
        raise ConfigError("name the devices with exactly one of --devices, --devices-file and --match")
    listed = None
    if devices is not None:
        listed = devices.split(",")
    elif devices_file is not None:
        try:
            listed = [line.split("#", 1)[0] for line in devices_file.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--devices-file {devices_file} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if listed is not None:
        listed = list(dict.fromkeys(d.strip() for d in listed if d.strip()))
        if not listed:
            raise RolloutError("the device list is empty")
    targets = {"pattern": match} if match is not None else {"devices": listed}
    settings = _settings(broker, root, ca_file, cert_file, key_file, username, password_file)
    facts = plan.bundle_facts(bundle, public_key)
    path = state_file or plan.default_state_path(facts)
    saved = plan.load_state(path)
    if saved is not None:
        probe = plan.RolloutState(facts, targets, "", root, stage_list, threshold, timeout, [], {})
        plan.check_resumable(saved, probe, path)
        state = saved
        state.timeout = timeout
    else:
        from edge_sdk.fleet.devices import discover

        known = discover(settings, root=root, wait=wait)
        chosen = plan.select_devices(known, devices=listed, pattern=match)
        state = plan.RolloutState.new(facts, chosen, targets=targets, broker=settings.redacted_broker(), root=root,
                                      stages=stage_list, max_failed=threshold, timeout=timeout)
        state.save(path)
    notify = (lambda line: None) if json_output else (lambda line: typer.echo(line, err=True))
    notify(f"rollout state: {path}")
    state = plan.Rollout(state, folder=bundle, settings=settings, path=path, notify=notify).run()
    _report(state, json_output=json_output)
    if state.status is not plan.RolloutStatus.COMPLETE:
        raise typer.Exit(1)


def fleet(
    broker: str = BROKER,
    wait: float = typer.Option(2.0, "--wait", help="Seconds to listen for the devices' retained messages."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object per device, a line each."),
    root: str = ROOT,
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Where rollouts keep their state (default ~/.local/state/edge-sdk/rollouts)."),
    ca_file: Optional[Path] = CA_FILE,
    cert_file: Optional[Path] = CERT_FILE,
    key_file: Optional[Path] = KEY_FILE,
    username: Optional[str] = USERNAME,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """Every device the broker has seen: status, model, sha, version, update state, last seen, rollout."""
    import json
    import time

    from rich.console import Console
    from rich.table import Table

    from edge_sdk.errors import ConfigError
    from edge_sdk.fleet.devices import discover
    from edge_sdk.fleet.rollout import rollout_states

    if wait < 0:
        raise ConfigError(f"--wait must not be negative, not {wait:g}")
    settings = _settings(broker, root, ca_file, cert_file, key_file, username, password_file)
    seen = discover(settings, root=root, wait=wait)
    rollouts = rollout_states(state_dir)

    def rollout_of(device: str) -> dict | None:
        if device not in rollouts:
            return None
        state, record = rollouts[device]
        return {"version": state.bundle.version, "status": state.status.value, "state": record.state.value, "reason": record.reason}

    if json_output:
        for device in seen.values():
            typer.echo(json.dumps({**device.to_json(), "rollout": rollout_of(device.id)}))
        return
    table = Table(title=f"{len(seen)} devices")
    for column in ("device", "status", "model", "sha", "version", "update", "last seen", "rollout"):
        table.add_column(column)
    for device in seen.values():
        update = device.update or {}
        ago = f"{max(0.0, time.time() - device.last_seen):.0f} s ago" if device.last_seen else "-"
        ro = rollout_of(device.id)
        table.add_row(device.id, device.status or "-", device.model or "-", _short(device.sha256),
                      str(device.version) if device.version is not None else "-",
                      f"{update['state']} (v{update.get('version')})" if update.get("state") else "-", ago,
                      f"v{ro['version']} {ro['state']} ({ro['status']})" if ro else "-")
    Console().print(table)
