from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from capture.errortext import describe_error
from capture.store import Store
from tests.capture.tcp_proxy import TcpProxy


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RecursionError("maximum recursion depth exceeded")


def test_type_and_message_on_one_line_or_the_type_alone() -> None:
    assert describe_error(ValueError("bad\n  value")) == "ValueError: bad value"
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert describe_error(Unprintable()) == "Unprintable"
    assert describe_error(ValueError("x" * 5000)) == "ValueError: " + "x" * 300


def test_a_statement_error_is_described_by_its_driver_error_never_its_parameters() -> None:
    secret = {"request": {"messages": [{"content": "sk-proj-do-not-log-me"}]}}
    wrapped = sa_exc.StatementError("msg", "INSERT INTO calls", secret, TypeError("too deep"))
    assert describe_error(wrapped) == "StatementError (TypeError): too deep"
    refused = sa_exc.OperationalError("INSERT", secret, Exception("database is locked"))
    assert describe_error(refused) == "OperationalError (Exception): database is locked"
    assert "sk-proj" not in describe_error(refused)


def test_a_timeout_without_a_message_still_says_what_it_was(postgres_url: str) -> None:
    """What once logged "reloading virtual keys failed: " with nothing after it."""

    async def scenario() -> str:
        target = make_url(postgres_url)
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        await proxy.stall()  # accepts, never answers: the connect times out
        url = target.set(host="127.0.0.1", port=proxy.port)
        store = await Store.connect(
            url.render_as_string(hide_password=False), connect_timeout_s=0.5
        )
        try:
            await store.count_calls()
        except Exception as exc:
            assert str(exc) == ""
            return describe_error(exc)
        finally:
            await store.close()
            await proxy.off()
        raise AssertionError("the stalled database answered")

    assert asyncio.run(scenario()) == "TimeoutError"
