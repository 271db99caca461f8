"""The command line: configuration mistakes end in one clear line, not a traceback."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from tests.processes import Running, start_gateway


def run_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_serve_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("auth: none\nproviders: {p: {base_url: 'http://x/v1'}}\nrouts: {}\n")
    result = run_gateway("serve", "--config", str(config))
    assert result.returncode == 2
    assert "routs: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_and_hash_key(tmp_path: Path) -> None:
    ok = run_gateway("check-config", "config/gateway.yaml")
    assert ok.returncode == 0, ok.stderr
    assert "route gpt-4o" in ok.stdout
    digest = run_gateway("hash-key", "sk-abc")
    assert digest.stdout.strip() == hashlib.sha256(b"sk-abc").hexdigest()


def test_auth_none_accepts_any_key(tmp_path: Path, simulator: Running) -> None:
    gateway = start_gateway(
        tmp_path,
        {
            "auth": "none",
            "providers": {"sim": {"base_url": f"{simulator.url}/v1"}},
            "routes": {"gpt-4o": {"variants": {"t": {"provider": "sim", "model": "gpt-4o"}}}},
        },
    )
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="anything", max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
        assert httpx.get(f"{gateway.url}/v1/models").status_code == 200
    finally:
        gateway.stop()
