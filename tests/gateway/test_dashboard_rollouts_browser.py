"""A rollout in progress on the dashboard, in headless Chromium (as test_dashboard_browser.py).

A real simulator and gateway; the gateway's SQLite store seeded with a rollout made by the
controller's own code (``tests.gateway.dashboard_rollout_seed``: ``task=billing`` advanced from
shadow to 50% and still watched, ``task=shipping`` pinned to the incumbent) and with student,
shadow and judge calls, plus live calls through the gateway, and a rollout whose state this
gateway cannot read. The page must show the rollout's
slices with each gate's state, the timeline of decisions and the savings (unknown prices as
unknown), log no console error, and leave a screenshot in test-artifacts/dashboard-rollout.png.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from capture.rollouts import RolloutTable
from capture.store import Store
from tests.gateway import dashboard_rollout_seed as seed
from tests.gateway.test_dashboard_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    wait_until,
)
from tests.processes import Running, start_gateway, start_simulator

try:
    from playwright.sync_api import Browser, ConsoleMessage, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("playwright is not installed", allow_module_level=True)

ADMIN_KEY = "dash-rollout-browser-admin-93e0"
GATEWAY_KEY = "sk-gw-dash-rollout-browser"
PROVIDER_KEY = "sk-provider-dash-rollout-browser"
ENV = {"DRB_GATEWAY_KEY": GATEWAY_KEY, "DRB_ADMIN_KEY": ADMIN_KEY, "DRB_PROVIDER_KEY": PROVIDER_KEY}
PROFILE = {"default": {"ttft_ms": 0, "token_ms": 0}}
LIVE_CALLS = 8

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium): apt-get install -y chromium",
)


def gateway_config(simulator_url: str, database_url: str) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "tests", "key": "${DRB_GATEWAY_KEY}"}]},
        "admin": {"keys": [{"name": "ops", "key": "${DRB_ADMIN_KEY}"}]},
        "providers": {"sim": {"base_url": f"{simulator_url}/v1", "api_key": "${DRB_PROVIDER_KEY}"}},
        "routes": {
            route: {
                "variants": {
                    name: {"provider": "sim", "model": model, "weight": weight}
                    for name, (model, weight) in variants.items()
                }
            }
            for route, variants in seed.ROUTES.items()
        },
        "capture": {"database_url": database_url, "flush_interval_ms": 50},
        # The page is tested on the store as the seeded controller left it: the gateway's own
        # controller would take the rollout over (its looks, its weights).
        "autopilot": {"enabled": False},
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("dashboard-rollout-browser")
    url = f"sqlite+aiosqlite:///{workdir}/rollout-capture.db"
    simulator = start_simulator(workdir, PROFILE)
    try:
        running = start_gateway(workdir, gateway_config(simulator.url, url), env=ENV)
        try:
            seed.seed_rollout(url, time.time())
            seed.seed_calls(url, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))
            seed.run(unreadable_rollout(url))
            live_traffic(running)
            yield running
        finally:
            running.stop()
    finally:
        simulator.stop()


async def unreadable_rollout(url: str) -> None:
    """A rollout saved by some other version of the controller, with one decision."""
    decision = {
        "slice": "*",
        "action": "start",
        "from_stage": 0,
        "to_stage": 0,
        "share": 0.0,
        "reason": "first evidence for this slice",
    }
    store = await Store.connect(url)
    try:
        await RolloutTable(store.engine).save("future", {"version": 99}, "running", [decision])
    finally:
        await store.close()


def live_traffic(gateway: Running) -> None:
    """Calls through the gateway (the student has 90% of gpt-4o), until all are stored."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    for i in range(LIVE_CALLS):
        client.chat.completions.create(
            model=seed.ROUTE,
            messages=[{"role": "user", "content": f"[task=billing] Where is invoice {i}?"}],
            max_tokens=16,
        )
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=admin, timeout=10) as http:
        for _ in range(100):
            found = http.get("/dashboard/api/calls", params={"window": "15m", "limit": 200})
            live = [c for c in found.json()["calls"] if c["route"] == seed.ROUTE]
            if len(live) >= seed.STUDENT_CALLS + LIVE_CALLS + 5 + seed.SHADOW_CALLS:
                return
            time.sleep(0.1)
    raise AssertionError("the live calls were not stored")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_a_rollout_in_progress_on_the_dashboard(browser: Browser, gateway: Running) -> None:
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            errors.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    page.goto(f"{gateway.url}/dashboard?key={ADMIN_KEY}&window=1h")
    wait_until(page, "() => Boolean(window.__dashboard && window.__dashboard.ready)")
    wait_until(page, "() => Boolean(window.__rollouts && window.__rollouts.ready)")

    # The rollout: its status, and each slice's stage, share and gates.
    card = page.locator(f'article.rollout[data-route="{seed.ROUTE}"]')
    assert card.is_visible()
    header = card.locator("header").inner_text()
    assert "running" in header and "teacher" in header and "student" in header
    assert "shadow → 5% → 25% → 50% → 90%" in header
    billing = card.locator('table.slices tr[data-slice="task=billing"]')
    assert billing.get_attribute("data-status") == "running"
    billing_text = billing.inner_text()
    assert "50%" in billing_text and "gates now" in billing_text
    verdicts = billing.locator("td.gate").evaluate_all(
        "cells => Object.fromEntries(cells.map(c => [c.dataset.gate, c.dataset.verdict]))"
    )
    assert verdicts == {"quality": "pass", "errors": "hold", "latency_p95": "hold", "cost": "pass"}
    quality = billing.locator('td.gate[data-gate="quality"]')
    assert "n 965" in quality.inner_text() and "vs 0.400" in quality.inner_text()
    assert "win rate" in (quality.get_attribute("title") or "")
    shipping = card.locator('table.slices tr[data-slice="task=shipping"]')
    assert shipping.get_attribute("data-status") == "pinned"
    assert "incumbent only" in shipping.inner_text()
    assert shipping.locator('td.gate[data-gate="quality"]').get_attribute("data-verdict") == "fail"
    assert "at its last decision" in shipping.inner_text()

    # The timeline, newest first: the pin, three advances, the two starts.
    rows = card.locator("table.timeline tr.decision")
    timeline = rows.evaluate_all("rows => rows.map(r => [r.dataset.slice, r.dataset.action])")
    assert timeline == [
        ["task=shipping", "pin"],
        ["task=billing", "advance"],
        ["task=billing", "advance"],
        ["task=billing", "advance"],
        ["task=shipping", "start"],
        ["task=billing", "start"],
    ]
    assert "significantly worse: quality" in rows.first.inner_text()
    assert "25% → 50%" in rows.nth(1).inner_text()
    assert "shadow → 5%" in rows.nth(3).inner_text()

    # A state this gateway cannot read: shown with why, its decisions still listed.
    future = page.locator('article.rollout[data-route="future"]')
    assert "version 99" in future.inner_text()
    assert future.locator("table.timeline tr.decision").count() == 1

    # The savings: gpt-4o's line, with the seeded and the live student calls; local-bot's
    # incumbent has no price, so what it would have cost is unknown, not $0.
    savings = page.locator("#savings-panel")
    assert savings.is_visible()
    total = page.locator(f'#savings tr.total[data-route="{seed.ROUTE}"]')
    cells = total.locator("td").all_inner_texts()
    assert int(cells[2].split()[0]) >= seed.STUDENT_CALLS + LIVE_CALLS * 0.5
    assert all(c.startswith("$") for c in cells[3:]), cells
    local = page.locator('#savings tr.total[data-route="local-bot"] td').all_inner_texts()
    assert local[3].startswith("$") and local[4] == "unknown" and local[9] == "unknown", local
    assert "(2 unpriced)" in local[2]

    # Another window redraws the panels.
    renders = page.evaluate("window.__rollouts.renders")
    page.click('#windows button[data-window="24h"]')
    wait_until(page, f"() => window.__rollouts.renders > {renders}")

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")  # the sticky header at the top of the shot
    page.screenshot(path=str(ARTIFACTS / "dashboard-rollout.png"), full_page=True)
    page.close()
    assert errors == []
