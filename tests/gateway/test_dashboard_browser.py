"""The dashboard page in headless Chromium, against a real gateway with captured traffic.

Debian's chromium (/usr/bin/chromium), driven by Playwright with ``executable_path`` (no
``playwright install``: nothing is downloaded). The simulator and the gateway run as real
processes (``tests.processes``); calls go through the gateway with the openai SDK and get
feedback through ``POST /v1/feedback``. An hour of older rows is added to the gateway's SQLite
store beside them, so the charts have a history to draw. The page must draw its charts, show
the variants, open a call's request and response on click (as text, never as HTML), log no
console error, and leave a screenshot in test-artifacts/dashboard.png.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import math
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from capture.store import Store
from tests.processes import Running, start_gateway, start_simulator

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip(
        "playwright is not installed (pip install playwright; the test drives Debian's "
        "chromium, so `playwright install` is not needed)",
        allow_module_level=True,
    )

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ADMIN_KEY = "dash-browser-admin-7d41"
GATEWAY_KEY = "sk-gw-dashboard-browser"
PROVIDER_KEY = "sk-provider-dashboard-browser"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
PROFILE = {
    "default": {"ttft_ms": 0, "token_ms": 0},
    "models": {
        "ft:*": {"ttft_ms": 12, "token_ms": 0.4, "jitter": 0.4},
        "gpt-4*": {"ttft_ms": 45, "token_ms": 1.5, "jitter": 0.4},
    },
}
ROUTES = {
    "gpt-4o": {"teacher": ("gpt-4o", 60), "student": ("ft:gpt-4o-mini:acme::s1", 40),
               "next": ("ft:gpt-4o-mini:acme::s2", 0)},
    "support-bot": {"v1": ("ft:gpt-4o-mini:acme::b1", 50), "v2": ("ft:gpt-4o-mini:acme::b2", 50)},
}  # fmt: skip

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed (/usr/bin/chromium): apt-get install -y chromium",
)


def gateway_config(simulator_url: str, database_url: str) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "tests", "key": "${DASH_GATEWAY_KEY}"}]},
        "admin": {"keys": [{"name": "ops", "key": "${DASH_ADMIN_KEY}"}]},
        "providers": {
            "sim": {"base_url": f"{simulator_url}/v1", "api_key": "${DASH_PROVIDER_KEY}"}
        },
        "routes": {
            "gpt-4o": {
                "variants": {
                    name: {"provider": "sim", "model": model, "weight": weight}
                    for name, (model, weight) in ROUTES["gpt-4o"].items()
                },
                "shadow": {"variant": "next", "sample": 0.3},
            },
            "support-bot": {
                "variants": {
                    name: {"provider": "sim", "model": model, "weight": weight}
                    for name, (model, weight) in ROUTES["support-bot"].items()
                }
            },
        },
        "capture": {"database_url": database_url, "flush_interval_ms": 50},
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("dashboard-browser")
    simulator = start_simulator(workdir, PROFILE)
    try:
        running = start_gateway(
            workdir,
            gateway_config(simulator.url, store_url(workdir)),
            env={
                "DASH_GATEWAY_KEY": GATEWAY_KEY,
                "DASH_ADMIN_KEY": ADMIN_KEY,
                "DASH_PROVIDER_KEY": PROVIDER_KEY,
            },
        )
        try:
            yield running
        finally:
            running.stop()
    finally:
        simulator.stop()


def store_url(workdir: Path) -> str:
    return f"sqlite+aiosqlite:///{workdir}/dashboard-capture.db"


def backfill(url: str, now: dt.datetime, rows: int = 2400) -> None:
    """An hour of older calls (before the live ones), with feedback, for the charts."""
    rng = random.Random(11)
    medians = {"teacher": 1400.0, "student": 420.0, "next": 380.0, "v1": 520.0, "v2": 480.0}
    batch: list[dict[str, Any]] = []
    scores: list[tuple[str, float]] = []
    for i in range(rows):
        route = "gpt-4o" if i % 3 else "support-bot"
        age = (i + rng.random()) / rows * 3540 + 60
        if route == "gpt-4o":
            # The student ramps up from 20% to 50% of the traffic over the hour.
            student_share = 0.5 - 0.3 * age / 3600
            variant = "student" if rng.random() < student_share else "teacher"
            if rng.random() < 0.15:
                variant = "next"
        else:
            variant = rng.choice(["v1", "v2"])
        total = rng.lognormvariate(math.log(medians[variant]), 0.35)
        status = 200 if rng.random() > 0.02 else rng.choice([429, 500])
        call_id = uuid.UUID(int=rng.getrandbits(128)).hex
        batch.append(
            {
                "id": call_id,
                "created_at": now - dt.timedelta(seconds=age),
                "endpoint": "chat",
                "route": route,
                "variant": variant,
                "provider": "sim",
                "requested_model": route,
                "upstream_model": ROUTES[route][variant][0],
                "request": {"model": route, "messages": [{"role": "user", "content": f"q {i}"}]},
                "response": {"choices": [{"message": {"role": "assistant", "content": "ok"}}]},
                "status": status,
                "error": None,
                "finish_reason": "stop",
                "prompt_tokens": 40 + i % 300,
                "completion_tokens": 20 + i % 90,
                "cached_tokens": 0,
                "cost_usd": (0.004 if variant == "teacher" else 0.0006) * rng.uniform(0.5, 1.5)
                if status == 200
                else None,
                "total_ms": total,
                "ttft_ms": total * 0.3 if i % 2 else None,
                "upstream_ms": total - 0.5,
                "overhead_ms": 0.5,
                "user_key": f"user-{i % 50}",
                "tags": {},
                "stream": bool(i % 2),
                "shadow_of": uuid.UUID(int=i).hex if variant == "next" else None,
                "cache_hit": False,
            }
        )
        if variant != "next" and status == 200 and rng.random() < 0.3:
            good = {"teacher": 0.82, "student": 0.74, "v1": 0.7, "v2": 0.71}[variant]
            scores.append((call_id, 1.0 if rng.random() < good else -1.0))

    async def write() -> None:
        store = await Store.connect(url)
        try:
            await store.insert_calls(batch)
            for call_id, value in scores:
                await store.add_feedback(call_id, value, "thumbs", now=now)
        finally:
            await store.close()

    # In a thread of its own: Playwright's sync API keeps an event loop on this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()


def live_traffic(gateway: Running) -> list[str]:
    """Calls through the gateway with the openai SDK (some streamed), most with feedback."""
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)

    def one(i: int) -> str:
        model = "gpt-4o" if i % 3 else "support-bot"
        content = XSS if i < 0 else f"Summarise order {i} for the customer, politely."
        messages: Any = [{"role": "user", "content": content}]
        if i % 4 == 3:
            stream = client.chat.completions.create(
                model=model, messages=messages, stream=True, max_tokens=24, user=f"u{i}"
            )
            for _ in stream:
                pass
            return ""
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=24, user=f"u{i}"
        )
        raw.parse()
        return raw.headers["x-request-id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(48)))
    # The last call, so the newest row (support-bot has no shadow that could come later).
    ids.append(one(-3))
    with httpx.Client(
        base_url=gateway.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=10
    ) as http:
        for n, request_id in enumerate(i for i in ids if i):
            response = http.post(
                "/v1/feedback",
                json={"request_id": request_id, "score": 1 if n % 4 else -1, "label": "thumbs"},
            )
            assert response.status_code == 200, response.text
    return [i for i in ids if i]  # the XSS call last


@pytest.fixture(scope="module")
def mounted(gateway: Running) -> Running:
    """The gateway, checked to serve the dashboard."""
    probe = httpx.get(
        f"{gateway.url}/dashboard/api/health",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert probe.status_code == 200, (
        "the dashboard is not mounted: gateway/app.py must pass build_dashboard(self) "
        f"to build_api ({probe.status_code} {probe.text[:200]})"
    )
    return gateway


@pytest.fixture(scope="module")
def traffic(mounted: Running) -> list[str]:
    gateway = mounted
    backfill(store_url(gateway.log.parent), dt.datetime.now(dt.UTC))
    ids = live_traffic(gateway)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=admin, timeout=10) as http:
        # Every live call is stored (the writer flushes every 50 ms).
        for _ in range(100):
            found = http.get("/dashboard/api/calls", params={"window": "15m", "limit": 200})
            if {c["id"] for c in found.json()["calls"]} >= set(ids):
                break
            time.sleep(0.1)
    return ids


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def wait_until(page: Page, expression: str, timeout: float = 15.0) -> None:
    """Poll ``expression`` in the page (``page.wait_for_function`` compiles its predicate with
    eval, which the page's Content-Security-Policy forbids, as it should)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def open_dashboard(browser: Browser, gateway: Running, errors: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            errors.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    page.goto(f"{gateway.url}/dashboard?key={ADMIN_KEY}&window=1h")
    wait_until(page, "() => Boolean(window.__dashboard && window.__dashboard.ready)")
    return page


def test_dashboard_in_headless_chromium(
    browser: Browser, gateway: Running, traffic: list[str]
) -> None:
    errors: list[str] = []
    page = open_dashboard(browser, gateway, errors)
    assert "key=" not in page.url, "the key must leave the address bar"

    # The variant tables: every configured variant, the teacher as reference.
    route = page.locator('article.route[data-route="gpt-4o"]')
    variants = route.locator("table.variants tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.variant)"
    )
    assert variants == ["teacher", "student", "next"]
    assert "reference" in route.locator('tr[data-variant="teacher"]').inner_text()
    # The tests against the teacher, with their p-values shown: the student is faster
    # (significant: a green chip).
    student = route.locator('tr[data-variant="student"]')
    assert student.inner_text().count("p ") == 2
    latency_chip = student.locator(".chip").nth(1)
    assert "\u00d7 median" in latency_chip.inner_text()
    assert "good" in (latency_chip.get_attribute("class") or "")
    assert "Mann-Whitney" in (
        latency_chip.locator("xpath=ancestor::td").get_attribute("title") or ""
    )
    support = page.locator('article.route[data-route="support-bot"] table.variants tbody tr')
    assert support.evaluate_all("rows => rows.map(r => r.dataset.variant)") == ["v1", "v2"]

    # Charts: two per route, each with data, and the series drawn in the variants' colours.
    charts = page.evaluate(
        """() => window.__dashboard.charts.map(c => ({
            route: c.route, kind: c.kind,
            points: c.chart.data.slice(1).reduce((n, s) => n + s.filter(v => v !== null).length, 0),
            series: c.chart.series.length - 1,
        }))"""
    )
    assert sorted((c["route"], c["kind"]) for c in charts) == [
        ("gpt-4o", "latency"),
        ("gpt-4o", "share"),
        ("support-bot", "latency"),
        ("support-bot", "share"),
    ]
    assert all(c["points"] > 20 for c in charts), charts
    colours = page.evaluate(
        """() => [...document.querySelectorAll('.chart canvas')].map(canvas => {
            const context = canvas.getContext('2d');
            const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
            let teacher = 0, student = 0;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] === 78 && data[i + 1] === 121 && data[i + 2] === 167) teacher++;
                if (data[i] === 242 && data[i + 1] === 142 && data[i + 2] === 43) student++;
            }
            return { teacher, student };
        })"""
    )
    assert len(colours) == 4
    assert colours[0]["teacher"] > 50 and colours[0]["student"] > 50, colours
    swatch = route.locator('tr[data-variant="teacher"] .swatch').evaluate(
        "s => getComputedStyle(s).backgroundColor"
    )
    assert swatch == "rgb(78, 121, 167)"  # the same colour in the table as in the charts

    # The capture health.
    health = page.locator("#health").inner_text().lower()
    assert "rows in store" in health and "dropped" in health

    # The last calls: the newest is a live one; a click shows its request and response.
    first = page.locator("#calls tbody tr.call").first
    assert first.get_attribute("data-id") == traffic[-1]
    first.click()
    detail = page.locator("#calls tr.detail pre.json").first
    detail.wait_for(timeout=5000)
    request_text = detail.inner_text()
    assert '"messages"' in request_text and "<img src=x" in request_text
    response_text = page.locator("#calls tr.detail pre.json").nth(1).inner_text()
    assert '"choices"' in response_text
    assert page.evaluate("window.__xss") is None, "captured text was injected as HTML"
    assert page.locator("#calls tr.detail img").count() == 0

    # Another window re-renders without errors.
    page.click('#windows button[data-window="15m"]')
    wait_until(page, "() => window.__dashboard.renders >= 2")
    page.click('#windows button[data-window="1h"]')
    wait_until(page, "() => window.__dashboard.renders >= 3")
    page.locator("#calls tbody tr.call").nth(1).click()
    page.locator("#calls tr.detail pre.json").first.wait_for(timeout=5000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")  # the sticky header at the top of the shot
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.close()
    assert errors == []


def test_the_admin_key_is_not_in_the_gateway_log(gateway: Running, traffic: list[str]) -> None:
    assert ADMIN_KEY not in gateway.log.read_text(errors="replace")


def test_sign_in_form_in_the_browser(browser: Browser, mounted: Running) -> None:
    page = browser.new_page()
    page.goto(f"{mounted.url}/dashboard")
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    wait_until(page, "() => Boolean(window.__dashboard && window.__dashboard.ready)")
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "gateway_dashboard")
    assert session["httpOnly"] is True and ADMIN_KEY not in session["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: out of the page's reach
    page.close()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A new gateway with an empty store, as on a first install."""
    workdir = tmp_path_factory.mktemp("dashboard-fresh")
    simulator = start_simulator(workdir, PROFILE)
    try:
        running = start_gateway(
            workdir,
            gateway_config(simulator.url, store_url(workdir)),
            env={
                "DASH_GATEWAY_KEY": GATEWAY_KEY,
                "DASH_ADMIN_KEY": ADMIN_KEY,
                "DASH_PROVIDER_KEY": PROVIDER_KEY,
            },
        )
        try:
            yield running
        finally:
            running.stop()
    finally:
        simulator.stop()


SATURATED = """() => [...document.querySelectorAll('.chart canvas')].map(canvas => {
    const context = canvas.getContext('2d');
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    let coloured = 0;  // the variants' colours, not the greys of the axes and grid
    for (let i = 0; i < data.length; i += 4) {
        const r = data[i], g = data[i + 1], b = data[i + 2];
        if (data[i + 3] > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
    }
    return coloured;
})"""


def test_the_first_calls_of_a_fresh_install_are_drawn(browser: Browser, fresh: Running) -> None:
    client = openai.OpenAI(base_url=f"{fresh.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    for i in range(4):
        client.chat.completions.create(
            model="gpt-4o" if i % 2 else "support-bot",
            messages=[{"role": "user", "content": f"first call {i}"}],
            max_tokens=8,
        )
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=fresh.url, headers=admin, timeout=10) as http:
        for _ in range(200):  # stored (the writer flushes every 50 ms)
            found = http.get("/dashboard/api/calls", params={"window": "15m", "limit": 50})
            if len(found.json()["calls"]) >= 4:
                break
            time.sleep(0.1)
    errors: list[str] = []
    page = open_dashboard(browser, fresh, errors)
    # under load the first render may precede the calls' visibility to the window's queries;
    # the page refreshes itself every 15 s (1 h window): wait for a render that draws them
    wait_until(
        page,
        """() => window.__dashboard.charts.length === 4 && window.__dashboard.charts.every(
            c => c.chart.data.slice(1).some(s => s.some(v => v !== null)))""",
        timeout=40.0,
    )
    charts = page.evaluate(
        """() => window.__dashboard.charts.map(c => ({
            kind: c.kind,
            values: c.chart.data.slice(1).reduce((n, s) => n + s.filter(v => v !== null).length, 0),
        }))"""
    )
    assert len(charts) == 4 and all(c["values"] >= 1 for c in charts), charts
    # every chart has a value or two, in a bucket or two; each must show on the canvas
    coloured = page.evaluate(SATURATED)
    assert len(coloured) == 4 and all(n > 20 for n in coloured), coloured
    page.close()
    assert errors == []
