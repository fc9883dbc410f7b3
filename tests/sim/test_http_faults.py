"""Injected faults, rate limits, token expiry, the BR-004 race and the /sim endpoints, over real
loopback HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from mes_sim import MesSimulator

from .support import FakeClock, Mes, eventually


def history(sim: MesSimulator) -> list[dict[str, object]]:
    rows = sim.ledger()["history"]
    assert isinstance(rows, list)
    return rows


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "code"), [("unavailable", 503, "SRV_002"), ("error_500", 500, "SRV_001")]
)
def test_refusing_faults_change_nothing(
    sim: MesSimulator, mes: Mes, mode: str, status: int, code: str
) -> None:
    sim.set_faults(mode=mode)
    for answer in (mes.start(101, 1), mes.complete(101, 1), mes.http.get("/health")):
        assert answer.status_code == status
        assert answer.json()["error_code"] == code
    ledger = sim.ledger()
    assert ledger["starts"] == [] and ledger["history"] == []
    sim.set_faults(mode="ok")
    assert mes.start(101, 1).status_code == 200


def test_drop_response_commits_then_disconnects(sim: MesSimulator, mes: Mes) -> None:
    sim.set_faults(mode="drop_response")
    with pytest.raises(httpx.RemoteProtocolError):
        mes.start(101, 1, started_at="2025-06-02T09:00:00Z")
    (start,) = sim.ledger()["starts"]
    assert (start["wip_id"], start["started_at"]) == (sim.wip_ids[0], "2025-06-02T09:00:00Z")
    with pytest.raises(httpx.RemoteProtocolError):
        mes.complete(101, 1)
    assert [row["result"] for row in history(sim)] == ["PASS"]
    # the simulator's own endpoints are never faulted
    with httpx.Client(base_url=sim.url) as http:
        assert http.get("/sim/ledger").json()["responses_dropped"] == 2
    sim.set_faults(mode="ok")
    assert mes.complete(101, 1).status_code == 400  # the replay is a duplicate PASS


def test_a_body_over_max_body_bytes_gets_the_connection_closed_unread(
    sim: MesSimulator, mes: Mes
) -> None:
    assert mes.start(101, 1).status_code == 200
    sim.set_faults(max_body_bytes=2000)
    with pytest.raises(httpx.TransportError):
        mes.complete(101, 1, measurements={"curve": "x" * 5000})
    assert history(sim) == []
    assert sim.ledger()["bodies_refused"] == 1
    assert mes.complete(101, 1, measurements={"torque": 1.5}).status_code == 200  # small: taken
    assert sim.ledger()["bodies_refused"] == 1
    with httpx.Client(base_url=sim.url) as http:  # the simulator's own endpoints: never cut
        assert http.post("/sim/faults", json={"path_contains": "x" * 3000}).status_code == 200
    assert sim.set_faults(max_body_bytes=None)["max_body_bytes"] is None


def test_a_fault_can_hit_exactly_one_matching_request(sim: MesSimulator, mes: Mes) -> None:
    sim.set_faults(mode="drop_response", path_contains="/complete-process", times=1)
    assert mes.start(101, 1).status_code == 200  # not a completion: answered
    with pytest.raises(httpx.RemoteProtocolError):
        mes.complete(101, 1)
    assert sim.faults()["mode"] == "ok"  # used up
    assert mes.complete(101, 1).status_code == 400  # the replay: a duplicate PASS
    assert [row["result"] for row in history(sim)] == ["PASS"]
    sim.set_faults(mode="unavailable", times=2)
    assert [mes.http.get("/health").status_code for _ in range(3)] == [503, 503, 200]


def test_requests_by_route(sim: MesSimulator, mes: Mes) -> None:
    mes.scan(sim.wip_ids[0])
    mes.scan(sim.wip_ids[1])
    mes.run(101, 1)
    mes.http.get("/api/nothing")
    assert sim.ledger()["requests_by_route"] == {
        "POST /api/v1/auth/login/json": 1,
        "POST /api/v1/wip-items/{wip_id}/scan": 2,
        "POST /api/v1/wip-items/{wip_id}/start-process": 1,
        "POST /api/v1/wip-items/{wip_id}/complete-process": 1,
        "GET (no route)": 1,
    }


def test_slow_answers_late_but_commits_anyway(
    sim: MesSimulator, connect: Callable[..., Mes]
) -> None:
    mes = connect(sim, timeout=0.2)
    assert mes.start(101, 1).status_code == 200
    sim.set_faults(mode="slow", delay_s=0.6)
    with pytest.raises(httpx.ReadTimeout):
        mes.complete(101, 1)
    assert sim.ledger()["slow_finished"] == 0
    eventually(lambda: sim.ledger()["slow_finished"] == 1)
    assert len(history(sim)) == 1
    assert sim.ledger()["wips"][0]["status"] == "IN_PROGRESS"


def test_slow_answers_a_patient_client(sim: MesSimulator, mes: Mes) -> None:
    sim.set_faults(mode="slow", delay_s=0.1)
    assert mes.start(101, 1).status_code == 200


def test_stop_cuts_a_slow_request_short(sim_factory: Callable[..., MesSimulator]) -> None:
    sim = sim_factory()
    sim.set_faults(mode="slow", delay_s=30)
    outcome: list[BaseException | int] = []

    def call() -> None:
        try:
            outcome.append(httpx.get(f"{sim.url}/health", timeout=10).status_code)
        except httpx.HTTPError as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    eventually(lambda: sim.ledger()["requests"] == 1)
    sim.stop()
    caller.join(timeout=5)
    assert not caller.is_alive() and len(outcome) == 1


def test_fault_validation(sim: MesSimulator) -> None:
    with httpx.Client(base_url=sim.url) as http:
        for bad in (
            {"mode": "sleepy"},
            {"rate_limit_per_min": 0},
            {"nope": 1},
            {"delay_s": "5"},
            {"expire_tokens": "yes"},
            {"convert": True},
            {"max_body_bytes": -1},
            {"max_body_bytes": "1"},
        ):
            answer = http.post("/sim/faults", json=bad)
            assert answer.status_code == 400 and answer.json()["detail"], bad
        assert http.post("/sim/faults", content=b"[1]").status_code == 400
        effective = http.post("/sim/faults", json={"mode": "slow", "delay_s": 0.5}).json()
    assert (effective["mode"], effective["delay_s"], effective["convert"]) == (
        "slow",
        0.5,
        "broken",
    )
    with pytest.raises(ValueError, match="unknown fault"):
        sim.set_faults(speed=3)


def test_reset_returns_to_the_seed(sim: MesSimulator, mes: Mes) -> None:
    mes.run(101, 1)
    mes.generate(sim.wip_ids[1])
    sim.set_faults(convert="working", rate_limit_per_min=7)
    with httpx.Client(base_url=sim.url) as http:
        answer = http.post("/sim/reset")
    assert answer.status_code == 200
    ledger = sim.ledger()
    assert ledger["history"] == [] and ledger["starts"] == []
    assert {w["status"] for w in ledger["wips"]} == {"CREATED"}
    counters = ("requests", "logins", "refreshes", "rate_limited", "labels_printed")
    assert [ledger[c] for c in counters] == [0] * 5
    assert sim.faults()["convert"] == "broken" and sim.faults()["rate_limit_per_min"] == 100
    assert mes.start(101, 1).status_code == 401  # tokens belong to the state too


def test_requests_are_counted_on_api_and_health_only(sim: MesSimulator) -> None:
    with httpx.Client(base_url=sim.url) as http:
        http.get("/health")
        http.get("/api/health")  # a 404, still received on an /api path
        http.get("/api/v1/processes/active")
        http.post(f"/api/v1/wip-items/{sim.wip_ids[0]}/scan")  # a 401
        http.get("/sim/ledger")
        http.get("/elsewhere")
    assert sim.ledger()["requests"] == 4


def test_restart_keeps_port_and_data(sim_factory: Callable[..., MesSimulator]) -> None:
    sim = sim_factory()
    url = sim.url
    assert httpx.post(f"{url}/api/v1/serials/generate-from-wip?wip_id={sim.wip_ids[0]}").is_success
    sim.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")
    sim.start()
    assert sim.url == url and httpx.get(f"{url}/health").is_success
    assert sim.ledger()["wips"][0]["status"] == "CONVERTED"


def test_stop_closes_kept_alive_connections(sim_factory: Callable[..., MesSimulator]) -> None:
    sim = sim_factory()
    with httpx.Client(base_url=sim.url) as http:
        assert http.get("/health").is_success
        sim.stop()
        with pytest.raises(httpx.TransportError):
            http.get("/health")


# -- rate limits -------------------------------------------------------------------------------


def test_429_with_retry_after_follows_the_window(sim_factory: Callable[..., MesSimulator]) -> None:
    clock = FakeClock()
    sim = sim_factory(clock=clock)
    sim.set_faults(rate_limit_per_min=2)
    with httpx.Client(base_url=sim.url) as http:
        assert http.get("/api/v1/processes/active").status_code == 200
        clock.advance(10)
        assert http.get("/api/v1/processes/active").status_code == 200
        clock.advance(10)
        refused = http.post("/api/v1/serials/generate-from-wip", params={"wip_id": "x"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "40"
        body = refused.json()
        assert (body["error_code"], body["retry_after"]) == ("RATE_LIMIT_EXCEEDED", 40)
        assert http.get("/health").status_code == 200  # not an /api/v1 path
        assert http.get("/sim/ledger").status_code == 200
        clock.advance(40)
        assert http.get("/api/v1/processes/active").status_code == 200
    ledger = sim.ledger()
    assert (ledger["rate_limited"], ledger["labels_printed"]) == (1, 0)


def test_429_clears_in_real_time(sim: MesSimulator) -> None:
    sim.set_faults(rate_limit_per_min=3, rate_limit_window_s=1)
    with httpx.Client(base_url=sim.url) as http:
        answers = [http.get("/api/v1/processes/active").status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        refused = http.get("/api/v1/processes/active")
        assert refused.headers["retry-after"] == "1"
        eventually(lambda: http.get("/api/v1/processes/active").status_code == 200)


def test_login_and_refresh_have_their_own_limits(sim_factory: Callable[..., MesSimulator]) -> None:
    sim = sim_factory(clock=FakeClock())
    credentials = {"username": "admin", "password": "admin-pass"}
    with httpx.Client(base_url=sim.url) as http:
        logins = [
            http.post("/api/v1/auth/login/json", json=credentials).status_code for _ in range(10)
        ]
        assert logins == [200] * 10
        assert http.post("/api/v1/auth/login", data=credentials).status_code == 429
        refresh = http.post("/api/v1/auth/login/json", json=credentials)  # still limited
        assert refresh.status_code == 429
        statuses = [
            http.post("/api/v1/auth/refresh", json={"refresh_token": "x"}).status_code
            for _ in range(31)
        ]
        assert statuses == [401] * 30 + [429]
        assert http.get("/api/v1/processes/active").status_code == 200  # the API bucket is apart
    assert sim.ledger()["logins"] == 10


# -- tokens ------------------------------------------------------------------------------------


def test_expire_tokens_then_refresh(sim: MesSimulator) -> None:
    mes = Mes(sim)
    try:
        tokens = mes.login()
        assert mes.trace(sim.wip_ids[0]).status_code == 200
        sim.set_faults(expire_tokens=True)
        expired = mes.trace(sim.wip_ids[0])
        assert expired.status_code == 401
        assert expired.json()["message"] == "Invalid or expired token"
        renewed = mes.http.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert renewed.status_code == 200
        mes.token = renewed.json()["access_token"]
        assert mes.trace(sim.wip_ids[0]).status_code == 200
        assert "expire_tokens" not in sim.faults()  # an action, not a lasting setting
    finally:
        mes.close()


def test_token_ttl(sim_factory: Callable[..., MesSimulator], connect: Callable[..., Mes]) -> None:
    clock = FakeClock()
    sim = sim_factory(clock=clock)
    long_lived = connect(sim)
    sim.set_faults(token_ttl_s=60)
    short_lived = connect(sim, login=False)
    assert short_lived.login()["expires_in"] == 60
    clock.advance(59)
    assert short_lived.trace(sim.wip_ids[0]).status_code == 200
    clock.advance(1)
    assert short_lived.trace(sim.wip_ids[0]).status_code == 401
    assert long_lived.trace(sim.wip_ids[0]).status_code == 200  # issued with 1800 s
    clock.advance(1800)
    assert long_lived.trace(sim.wip_ids[0]).status_code == 401


def test_zero_ttl_tokens_never_work(sim: MesSimulator, connect: Callable[..., Mes]) -> None:
    sim.set_faults(token_ttl_s=0)
    mes = connect(sim)
    assert mes.trace(sim.wip_ids[0]).status_code == 401


# -- BR-004 is not atomic on the deployed MES -------------------------------------------------


def parallel_passes(sim: MesSimulator) -> list[int]:
    """Two identical PASS completions released at the same moment."""
    mes = Mes(sim)
    mes.login()
    assert mes.start(101, 1).status_code == 200
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def complete() -> None:
        client = Mes(sim)
        client.token = mes.token
        client.http.get("/health")  # connect first, so the barrier releases two sends
        barrier.wait(timeout=5)
        statuses.append(client.complete(101, 1).status_code)
        client.close()

    threads = [threading.Thread(target=complete) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    mes.close()
    return sorted(statuses)


def test_parallel_passes_both_land_on_the_deployed_mes(sim: MesSimulator) -> None:
    sim.set_faults(br004_window_s=0.5)  # wide enough for the second request to arrive
    assert parallel_passes(sim) == [200, 200]
    assert [row["result"] for row in history(sim)] == ["PASS", "PASS"]


def test_parallel_passes_are_refused_once_on_the_spec_mes(
    sim_factory: Callable[..., MesSimulator],
) -> None:
    sim = sim_factory(semantics="spec")
    sim.set_faults(br004_window_s=0.5)  # ignored: the spec's check is atomic
    assert parallel_passes(sim) == [200, 400]
    assert [row["result"] for row in history(sim)] == ["PASS"]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_apply_then_error_records_the_change_and_answers_a_server_error(
    sim: MesSimulator, mes: Mes, status: int
) -> None:
    sim.set_faults(mode="apply_then_error", error_status=status, path_contains="complete", times=1)
    assert mes.start(101, 1).status_code == 200
    answer = mes.complete(101, 1, result="FAIL")
    assert answer.status_code == status
    if status == 500:
        assert answer.json()["error_code"] == "SRV_001"
    else:  # the proxy's page, not JSON
        assert answer.headers["content-type"] == "text/html" and b"nginx" in answer.content
    assert [row["result"] for row in history(sim)] == ["FAIL"]  # applied all the same


def test_error_status_is_checked(sim: MesSimulator) -> None:
    with pytest.raises(ValueError, match="error_status"):
        sim.set_faults(error_status=503)


def test_apply_then_garble_records_the_change_and_answers_a_body_nobody_can_decode(
    sim: MesSimulator, mes: Mes
) -> None:
    sim.set_faults(mode="apply_then_garble", path_contains="start-process", times=1)
    with pytest.raises(httpx.DecodingError):
        mes.start(101, 1)
    assert len(sim.ledger()["starts"]) == 1


def test_database_down_fails_every_api_call_while_health_still_answers_200(
    sim: MesSimulator, mes: Mes
) -> None:
    # As the deployed MES does: /health is 200 (degraded) even when its database is down.
    sim.set_faults(mode="database_down")
    health = mes.http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert mes.start(101, 1).status_code == 503
    assert mes.http.get("/api/v1/processes/active").status_code == 503
    assert sim.ledger()["starts"] == []
