"""The database lease: one holder at a time, even when two race for it, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from capture.engine import create_engine
from capture.lease import DatabaseLease

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def test_take_renew_expire_release(database_url: str) -> None:
    async def run() -> None:
        engine = create_engine(database_url)
        try:
            a, b = DatabaseLease(engine), DatabaseLease(engine)
            assert await a.holder(T0) is None
            assert await a.acquire("replica-a", 10, T0)
            assert not await b.acquire("replica-b", 10, T0 + dt.timedelta(seconds=5))
            assert await a.acquire("replica-a", 10, T0 + dt.timedelta(seconds=9))  # renewed
            assert not await b.acquire("replica-b", 10, T0 + dt.timedelta(seconds=15))
            assert await b.holder(T0 + dt.timedelta(seconds=15)) == "replica-a"
            # a holder that stops renewing loses it once it expires
            assert await b.acquire("replica-b", 10, T0 + dt.timedelta(seconds=19, microseconds=1))
            assert not await a.acquire("replica-a", 10, T0 + dt.timedelta(seconds=20))
            # releasing hands over at once; releasing what one does not hold does nothing
            await a.release("replica-a", T0 + dt.timedelta(seconds=21))
            assert await a.holder(T0 + dt.timedelta(seconds=21)) == "replica-b"
            await b.release("replica-b", T0 + dt.timedelta(seconds=21))
            assert await a.holder(T0 + dt.timedelta(seconds=21)) is None
            assert await a.acquire("replica-a", 10, T0 + dt.timedelta(seconds=21))
            # leases of other names are independent
            assert await DatabaseLease(engine, "other").acquire("replica-b", 10, T0)
            with pytest.raises(ValueError, match="time-to-live"):
                await a.acquire("replica-a", 0, T0)
            with pytest.raises(ValueError, match="timezone-aware"):
                await a.acquire("replica-a", 1, dt.datetime(2026, 1, 1))
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_two_holders_racing_never_both_hold(database_url: str) -> None:
    """Two replicas (each its own engine and connections) race for the lease every round;
    rounds alternate between a fresh (never taken) lease, an expired one and a held one."""

    async def run() -> None:
        engines = [create_engine(database_url), create_engine(database_url)]
        try:
            leases = [DatabaseLease(e, "race") for e in engines]
            winners: list[str] = []
            for round_ in range(30):
                if round_ % 10 == 0:  # a fresh name: both race to create the row
                    leases = [DatabaseLease(e, f"race-{round_}") for e in engines]
                now = T0 + dt.timedelta(seconds=100 * round_)  # the last lease has expired
                got = await asyncio.gather(
                    leases[0].acquire("replica-a", 30, now),
                    leases[1].acquire("replica-b", 30, now),
                )
                assert sum(got) == 1, (round_, got)
                winner = "replica-a" if got[0] else "replica-b"
                winners.append(winner)
                assert await leases[0].holder(now) == winner
                # the loser keeps trying while the lease is held: never gets it
                later = now + dt.timedelta(seconds=10)
                loser = 1 if got[0] else 0
                assert not await leases[loser].acquire(["replica-a", "replica-b"][loser], 30, later)
            assert len(winners) == 30
        finally:
            for e in engines:
                await e.dispose()

    asyncio.run(run())
