from __future__ import annotations

import gc
import os
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from store import Store, StoreError, StoreUnavailable
from store.core import LOOKUP_CONNECTIONS, PING_IDLE_SECONDS, _Lookups
from store.history import (
    AskedScore,
    Ranks,
    decode_cursor,
    latest_score,
    latest_scores,
    lead_scores,
    score_counts,
    trend,
)
from store.schema import predictions

T0 = datetime(2026, 11, 1)


def _row(lead_id: str, minute: int, score: int, version: str = "v1", name: str = "m") -> dict[str, object]:
    return {"lead_id": lead_id, "scored_at": T0 + timedelta(minutes=minute), "as_of": None, "model_name": name,
            "model_version": version, "model_kind": "trained", "probability": score / 100, "score": score,
            "grade": "B", "reasons": None, "features": {}}


def test_trend_uses_a_band_of_points() -> None:
    # band 3: 50 -> 54 is +4 (improving), 50 -> 53 is +3 (steady), 50 -> 46 is -4 (declining)
    assert [trend(None, 50, band=3), trend(50, 54, band=3), trend(50, 53, band=3), trend(50, 47, band=3),
            trend(50, 46, band=3)] == ["new", "improving", "steady", "steady", "declining"]


def test_percentile_is_the_share_below_plus_half_the_ties() -> None:
    counts = [0] * 101
    counts[10], counts[50], counts[90] = 2, 1, 1  # four leads: 10, 10, 50, 90
    ranks = Ranks.of(counts)
    # 50: 2 below + 0.5 x 1 tie = 2.5 of 4 = 62.5%; 10: 0 + 0.5 x 2 = 1 of 4 = 25%; 95: 4 of 4 = 100%; 0: 0%
    assert [ranks.percentile(50), ranks.percentile(10), ranks.percentile(95), ranks.percentile(0)] == \
        [62.5, 25.0, 100.0, 0.0]
    assert Ranks.of([0] * 101).percentile(40) is None


def test_history_pages_newest_first_and_latest_scores_per_lead(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(predictions.insert(), [_row("A", m, 10 + m) for m in range(5)] + [_row("B", 0, 70),
                                                                                   _row("B", 1, 40, "v2")])
    page, cursor = lead_scores(store, lead_id="A", limit=2)
    assert [s.score for s in page] == [14, 13] and cursor is not None
    page, cursor = lead_scores(store, lead_id="A", limit=2, cursor=cursor)
    assert [s.score for s in page] == [12, 11] and cursor is not None
    page, cursor = lead_scores(store, lead_id="A", limit=2, cursor=cursor)
    assert [s.score for s in page] == [10] and cursor is None
    assert lead_scores(store, lead_id="nobody", limit=5) == ([], None)
    with pytest.raises(StoreError, match="cursor"):
        decode_cursor("not-a-cursor")
    with store.begin() as conn:
        assert latest_scores(conn, model_name="m", lead_ids=["A"]) == {"A": 14}
        # B's newest is v2's 40 (any version of the name counts)
        assert latest_scores(conn, model_name="m", lead_ids=["A", "B", "C"]) == {"A": 14, "B": 40}
        # v1's leads since minute 0, each once with its newest v1 score: A 14, B 70
        counts = score_counts(conn, model_name="m", model_version="v1", since=T0)
        assert sum(counts) == 2 and counts[14] == 1 and counts[70] == 1
        later = score_counts(conn, model_name="m", model_version="v1", since=T0 + timedelta(minutes=3))
        assert sum(later) == 1 and later[14] == 1  # only A's minutes 3 and 4; its newest is 14


def test_latest_scores_are_the_newest_by_the_same_model_name_only(store: Store) -> None:
    # Lead A scored by m (10, then 30 at minute 2) and by n (80 at minute 1, 90 at minute 3, the newest overall).
    with store.begin() as conn:
        conn.execute(predictions.insert(), [_row("A", 0, 10), _row("A", 1, 80, name="n"), _row("A", 2, 30),
                                            _row("A", 3, 90, name="n"), _row("B", 0, 55, name="n")])
    with store.reading() as conn:
        # m's newest of A is 30 (minute 2), though n's 90 at minute 3 is newer; B has no score by m at all
        assert latest_scores(conn, model_name="m", lead_ids=["A"]) == {"A": 30}
        assert latest_scores(conn, model_name="m", lead_ids=["A", "B"]) == {"A": 30}
        assert latest_scores(conn, model_name="n", lead_ids=["A", "B"]) == {"A": 90, "B": 55}
        assert latest_scores(conn, model_name="n", lead_ids=["B"]) == {"B": 55}
        assert latest_scores(conn, model_name="other", lead_ids=["A", "B"]) == {}


def test_the_drivers_own_lookup_gives_the_same_answer_and_hands_the_connection_back_as_it_was(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(predictions.insert(), [_row("A", 0, 10), _row("A", 1, 80, name="n"), _row("A", 2, 30)])
    # Seven lookups on one pooled connection: psycopg prepares the statement on the server from the fifth.
    found = [latest_score(store, model_name="m", lead_id="A") for _ in range(7)]
    assert found == [30] * 7  # m's newest of A (minute 2), not n's 80
    assert latest_score(store, model_name="n", lead_id="A") == 80
    assert latest_score(store, model_name="m", lead_id="nobody") is None
    with store.begin() as conn:  # the pool's next user gets a connection in a transaction again, not autocommit
        conn.execute(predictions.insert(), [_row("A", 3, 44)])
        if not store.is_sqlite:
            assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
    assert latest_score(store, model_name="m", lead_id="A") == 44


def test_a_driver_error_of_the_lookup_is_store_unavailable(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(sa.text("DROP TABLE predictions"))  # the schema looks current, the table is gone
    # sqlite3.OperationalError / psycopg.errors.UndefinedTable, raised by the driver itself: mapped by faults()
    with pytest.raises(StoreUnavailable, match=r"is unavailable: .*predictions"):
        latest_score(store, model_name="m", lead_id="A")


def _filled(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(predictions.insert(), [_row("A", 0, 10), _row("A", 1, 80, name="n"), _row("A", 2, 30)])


def test_a_score_asked_ahead_is_the_one_the_plain_lookup_reads(store: Store) -> None:
    _filled(store)
    # Seven asks: the first prepares the statement on its connection, the next six reuse both.
    found = []
    for _ in range(7):
        with AskedScore(store, model_name="m", lead_id="A") as asked:
            assert (asked._sent is None) == store.is_sqlite  # sent ahead on PostgreSQL only
            found.append(asked.result())
    assert found == [30] * 7  # m's newest of A (minute 2), not n's 80 of minute 1
    assert AskedScore(store, model_name="n", lead_id="A").result() == 80
    assert AskedScore(store, model_name="m", lead_id="nobody").result() is None
    if not store.is_sqlite:
        assert store._lookups is not None and store._lookups._open == 1  # one connection served all nine


def _lookups(store: Store) -> _Lookups:
    assert store._lookups is not None
    return store._lookups


def test_an_answer_never_read_is_drained_or_its_connection_closed(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite sends nothing ahead")
    _filled(store)
    with AskedScore(store, model_name="m", lead_id="A"):
        pass  # left unread: its 30 must not become the next ask's answer on the same connection
    assert _lookups(store)._open == 1 and len(_lookups(store)._free) == 1
    assert AskedScore(store, model_name="n", lead_id="A").result() == 80
    AskedScore(store, model_name="m", lead_id="A").close(wait=False)  # an interrupt: closed, not drained
    assert _lookups(store)._open == 0 and _lookups(store)._free == []
    assert AskedScore(store, model_name="m", lead_id="A").result() == 30


def test_with_every_lookup_connection_busy_an_ask_reads_the_plain_way(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite sends nothing ahead")
    _filled(store)
    held = [AskedScore(store, model_name="m", lead_id="A") for _ in range(LOOKUP_CONNECTIONS)]
    extra = AskedScore(store, model_name="n", lead_id="A")
    assert extra._sent is None and extra.result() == 80  # the 6th of 5: the pooled lookup's answer
    assert [asked.result() for asked in held] == [30] * LOOKUP_CONNECTIONS
    assert _lookups(store)._open == LOOKUP_CONNECTIONS == len(_lookups(store)._free)



def test_a_lead_id_with_a_nul_is_not_asked_as_the_lead_before_its_nul(store: Store) -> None:
    _filled(store)  # lead A's newest score by m is 30
    # libpq sends a text parameter up to its first NUL: sent ahead, "A\x00B" was asked as "A" and answered 30.
    asked = AskedScore(store, model_name="m", lead_id="A\x00B")
    if store.is_sqlite:
        assert asked.result() is None  # SQLite stores the NUL: no such lead
    else:
        with pytest.raises(StoreUnavailable):  # as the plain lookup: PostgreSQL text cannot hold a NUL
            asked.result()
    assert asked._sent is None


class _Killed(BaseException):
    """An interrupt that is not an Exception, as gevent's GreenletExit and Timeout are."""


def test_an_interrupt_while_an_answer_is_read_or_drained_frees_its_connections_slot(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite sends nothing ahead")
    _filled(store)

    def interrupted(_pgconn: object) -> None:
        raise _Killed

    monkeypatch.setattr("store.core._first_value", interrupted)
    # As many interrupted reads as there are connections: each connection closed and its slot freed, 5 - 5 = 0
    # open (a lost slot each would leave all 5 taken, and every later ask read the plain way).
    for _ in range(LOOKUP_CONNECTIONS):
        with pytest.raises(_Killed), AskedScore(store, model_name="m", lead_id="A") as asked:
            asked.result()
    assert (_lookups(store)._open, _lookups(store)._free) == (0, [])
    # As many interrupted drains (an error in the block leaves the answer unread): 0 open again.
    for _ in range(LOOKUP_CONNECTIONS):
        with pytest.raises(_Killed), AskedScore(store, model_name="m", lead_id="A") as asked:
            assert asked._sent is not None
            raise ValueError("a 4xx after the send")
    assert (_lookups(store)._open, _lookups(store)._free) == (0, [])
    monkeypatch.undo()
    with AskedScore(store, model_name="m", lead_id="A") as asked:
        assert asked._sent is not None and asked.result() == 30


def test_a_forked_child_opens_its_own_lookup_connections_and_leaves_the_parents_alone(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite sends nothing ahead")
    _filled(store)
    assert AskedScore(store, model_name="m", lead_id="A").result() == 30  # the parent's connection, now idle
    parent = _lookups(store)._free[0].conn.info.backend_pid
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: ask, then drop everything it inherited as a finishing worker would
        code = 1
        try:
            child = AskedScore(store, model_name="n", lead_id="A").result()
            own = _lookups(store)._free[0].conn.info.backend_pid
            os.write(write, f"{child} {own}".encode())
            store.dispose()
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    deadline = time.monotonic() + 30  # a child stuck on a lock it inherited fails the test, not the run
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = done[1]
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish its ask in 30 s")
    answer = os.read(read, 100).decode().split()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer[0] == "80" and int(answer[1]) != parent  # its own session, not the parent's
    # The parent's session survived the child's exit: read on it again at once (no idle retry can hide a loss).
    assert AskedScore(store, model_name="m", lead_id="A").result() == 30
    assert _lookups(store)._free[0].conn.info.backend_pid == parent


def test_an_idle_lookup_connection_the_server_ended_is_replaced_by_itself(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite sends nothing ahead")
    _filled(store)
    assert AskedScore(store, model_name="m", lead_id="A").result() == 30
    ended = _lookups(store)._free[0].conn.info.backend_pid
    with store.begin() as conn:  # as a server restart or an idle timeout would
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": ended}).scalar() is True
    time.sleep(PING_IDLE_SECONDS + 0.1)  # idle past the ping interval: a failure there is retried once
    assert AskedScore(store, model_name="m", lead_id="A").result() == 30
    assert _lookups(store)._free[0].conn.info.backend_pid != ended
    # Ended again and used at once: the fault is the caller's StoreUnavailable, and the next ask recovers.
    ended = _lookups(store)._free[0].conn.info.backend_pid
    with store.begin() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": ended})
    with pytest.raises(StoreUnavailable):
        AskedScore(store, model_name="m", lead_id="A").result()
    assert AskedScore(store, model_name="m", lead_id="A").result() == 30
