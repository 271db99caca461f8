"""The dashboard needs an admin key: bearer for the API, a session cookie for the browser."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from capture.migrate import upgrade_async
from capture.store import Store
from gateway.api import build_api
from gateway.capturing import AnyWriter
from gateway.dashboard import build_dashboard
from gateway.dashboard.access import COOKIE, SESSION_S, DashboardAccess
from gateway.metrics import Metrics
from gateway.runtime import RuntimeManager
from gateway.settings import AdminSettings, Settings

ADMIN_KEY = "dash-admin-key-0c9a7e"
OTHER_KEY = "not-the-admin-key"


def settings(admin: bool = True) -> Settings:
    config: dict[str, Any] = {
        "auth": "none",
        "providers": {"sim": {"base_url": "http://127.0.0.1:9/v1"}},
        "routes": {"gpt-4": {"variants": {"teacher": {"provider": "sim", "model": "gpt-4"}}}},
    }
    if admin:
        config["admin"] = {"keys": [{"name": "ops", "key": ADMIN_KEY}]}
    return Settings.model_validate(config)


@dataclass
class FakeGateway:
    manager: RuntimeManager
    store: Store | None
    writer: AnyWriter | None = None
    ready: bool = True
    metrics: Metrics = field(default_factory=Metrics)

    def sync_metrics(self) -> None:
        pass


class Client:
    """An in-process client of the gateway's API with the dashboard mounted."""

    def __init__(self, store: Store | None, admin: bool = True) -> None:
        self.runner = asyncio.Runner()
        state = FakeGateway(RuntimeManager(settings(admin)), store)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_api(state, build_dashboard(state))),
            base_url="http://gw",
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, path, **kwargs))

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('access')}/capture.db"
    asyncio.run(upgrade_async(url))
    yield asyncio.run(Store.connect(url))


@pytest.fixture
def client(store: Store) -> Iterator[Client]:
    c = Client(store)
    yield c
    c.close()


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["message"]


API_PATHS = [
    "/dashboard/api/overview",
    "/dashboard/api/timeseries",
    "/dashboard/api/health",
    "/dashboard/api/calls",
    "/dashboard/api/calls/0123456789abcdef0123456789abcdef",
]


@pytest.mark.parametrize("path", API_PATHS)
def test_api_without_a_key_is_401_in_openai_shape(client: Client, path: str) -> None:
    assert_openai_error(client.request("GET", path), 401, "missing_api_key")


@pytest.mark.parametrize("path", API_PATHS)
def test_api_with_a_wrong_key_is_401(client: Client, path: str) -> None:
    response = client.request("GET", path, headers={"authorization": f"Bearer {OTHER_KEY}"})
    assert_openai_error(response, 401, "invalid_api_key")


def test_api_with_another_scheme_is_401(client: Client) -> None:
    response = client.request(
        "GET", "/dashboard/api/health", headers={"authorization": f"Basic {ADMIN_KEY}"}
    )
    assert_openai_error(response, 401, "missing_api_key")


def test_a_gateway_key_is_not_an_admin_key(client: Client) -> None:
    response = client.request(
        "GET", "/dashboard/api/health", headers={"authorization": "Bearer sk-gateway-local"}
    )
    assert_openai_error(response, 401, "invalid_api_key")


def test_api_with_the_admin_key(client: Client) -> None:
    response = client.request(
        "GET", "/dashboard/api/overview", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 200
    assert response.json()["routes"][0]["route"] == "gpt-4"


def test_without_admin_keys_the_dashboard_is_403(store: Store) -> None:
    c = Client(store, admin=False)
    try:
        response = c.request(
            "GET", "/dashboard/api/health", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert_openai_error(response, 403, "admin_disabled")
        page = c.request("GET", "/dashboard")
        assert page.status_code == 403
        assert "admin.keys" in page.text
    finally:
        c.close()


def test_the_page_asks_for_the_key(client: Client) -> None:
    page = client.request("GET", "/dashboard")
    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert 'action="/dashboard/login"' in page.text
    assert "Content-Security-Policy" in page.headers


def test_query_key_is_exchanged_for_an_httponly_cookie(client: Client) -> None:
    response = client.request("GET", "/dashboard", params={"key": ADMIN_KEY})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"  # the key leaves the address bar
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Path=/dashboard", "SameSite=strict", f"Max-Age={SESSION_S}"):
        assert attribute.lower() in cookie.lower()
    assert ADMIN_KEY not in cookie
    session = response.cookies[COOKIE]

    page = client.request("GET", "/dashboard", headers={"cookie": f"{COOKIE}={session}"})
    assert page.status_code == 200
    assert 'id="routes"' in page.text
    api = client.request("GET", "/dashboard/api/health", headers={"cookie": f"{COOKIE}={session}"})
    assert api.status_code == 200


def test_other_parameters_survive_the_key_exchange(client: Client) -> None:
    response = client.request("GET", "/dashboard", params={"window": "24h", "key": ADMIN_KEY})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard?window=24h"


def test_wrong_query_key_shows_the_form_again(client: Client) -> None:
    response = client.request("GET", "/dashboard", params={"key": OTHER_KEY})
    assert response.status_code == 401
    assert "not an admin key" in response.text
    assert "set-cookie" not in response.headers


def test_login_form(client: Client) -> None:
    ok = client.request("POST", "/dashboard/login", data={"key": ADMIN_KEY})
    assert ok.status_code == 303 and COOKIE in ok.cookies
    bad = client.request("POST", "/dashboard/login", data={"key": OTHER_KEY})
    assert bad.status_code == 401 and "set-cookie" not in bad.headers


def test_tampered_and_expired_cookies_are_refused(client: Client) -> None:
    session = client.request("GET", "/dashboard", params={"key": ADMIN_KEY}).cookies[COOKIE]
    expires, _, signature = session.partition(".")
    tampered = f"{int(expires) + 3600}.{signature}"
    assert (
        client.request(
            "GET", "/dashboard/api/health", headers={"cookie": f"{COOKIE}={tampered}"}
        ).status_code
        == 401
    )
    page = client.request("GET", "/dashboard", headers={"cookie": f"{COOKIE}={tampered}"})
    assert page.status_code == 401 and "session has ended" in page.text

    admin = AdminSettings.model_validate({"keys": [{"name": "ops", "key": ADMIN_KEY}]})
    later = DashboardAccess(lambda: admin, clock=lambda: int(expires) + 1.0)
    assert not later.session_valid(session)
    assert DashboardAccess(lambda: admin, clock=lambda: int(expires) - 1.0).session_valid(session)
    rotated = AdminSettings.model_validate({"keys": [{"name": "ops", "key": "a-new-key"}]})
    assert not DashboardAccess(lambda: rotated).session_valid(session)


def test_logout_clears_the_cookie(client: Client) -> None:
    response = client.request("POST", "/dashboard/logout")
    assert response.status_code == 303
    assert (
        f'{COOKIE}=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )


def test_static_files_need_no_key_and_stay_inside(client: Client) -> None:
    js = client.request("GET", "/dashboard/static/dashboard.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    chart = client.request("GET", "/dashboard/static/vendor/uPlot.iife.min.js")
    assert chart.status_code == 200 and "uPlot" in chart.text
    for path in ("../routes.py", "..%2Froutes.py", "index.html", "nope.js"):
        assert_openai_error(client.request("GET", f"/dashboard/static/{path}"), 404, "not_found")


def test_bad_window_is_400(client: Client) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    response = client.request(
        "GET", "/dashboard/api/overview", params={"window": "3y"}, headers=headers
    )
    assert_openai_error(response, 400, "invalid_window")
    response = client.request(
        "GET", "/dashboard/api/calls", params={"before": "garbage"}, headers=headers
    )
    assert response.status_code == 400


def test_without_capture_the_api_says_so(tmp_path: Path) -> None:
    c = Client(None)
    try:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        assert_openai_error(
            c.request("GET", "/dashboard/api/overview", headers=headers), 409, "capture_disabled"
        )
        health = c.request("GET", "/dashboard/api/health", headers=headers).json()
        assert health == {"capture": {"enabled": False}, "store": None}
    finally:
        c.close()


def test_the_key_is_never_logged(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.request("GET", "/dashboard", params={"key": ADMIN_KEY})
        client.request("POST", "/dashboard/login", data={"key": ADMIN_KEY})
        client.request(
            "GET", "/dashboard/api/health", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
    # The test's own client (httpx) logs the URLs it requests; the server side must not.
    server_side = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert server_side, "expected the server side to log something at DEBUG"
    assert not [line for line in server_side if ADMIN_KEY in line]
