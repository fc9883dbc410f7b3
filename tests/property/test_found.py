"""What the stateful property test found, each as the plain sequence of steps it shrank to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.core.topics import Inbound

from .test_stateful import BridgeMachine, Said


@pytest.fixture
def machine() -> Iterator[BridgeMachine]:
    run = BridgeMachine()
    yield run
    run.teardown()


def _pass_elsewhere_meanwhile(machine: BridgeMachine) -> None:
    """WIP 1's process 1 is started through the bridge; the MES then records a PASS of it from
    elsewhere (an operator in its web UI), and the station completes its batch PASS."""
    machine.receive([Said(Inbound.START, station="1", wip=0, process=1)], ack="sent")
    machine.drain()
    machine.runner.run(machine.passed_elsewhere(machine.wips[0], 1))
    machine.receive([Said(Inbound.COMPLETE, station="1", result="PASS")], ack="sent")


def test_a_second_pass_the_mes_refuses_is_a_dead_letter(machine: BridgeMachine) -> None:
    _pass_elsewhere_meanwhile(machine)
    machine.drain()
    [dead] = machine.state.outbox.dead()
    assert dead.action == "complete"
    assert dead.dead_reason is not None and dead.dead_reason["code"] == "DUPLICATE_PASS"
    machine.the_mes_holds_each_record_once_in_order_and_none_is_lost()


def test_a_second_pass_refused_after_a_lost_answer_is_still_a_dead_letter(
    machine: BridgeMachine,
) -> None:
    _pass_elsewhere_meanwhile(machine)
    # The MES refuses the second PASS (BR-004) and that answer is lost: the next attempt asks
    # the trace, which has no record with this completed_at, sends it again and is refused again.
    machine.deliver(pick=0, plan=["lost"])
    machine.deliver(pick=0, plan=[])
    dead = machine.state.outbox.dead()
    assert [entry.dead_reason and entry.dead_reason["code"] for entry in dead] == ["DUPLICATE_PASS"]
