"""bridge.core.problems: every refusal has operator wording in English and Korean."""

from __future__ import annotations

import re

import pytest

from bridge.core.problems import Problem, ProblemCode
from bridge.mes.errors import MesError, MesErrorCode

HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.mark.parametrize("code", list(ProblemCode), ids=[code.name for code in ProblemCode])
def test_every_problem_code_has_wording_in_both_languages(code: ProblemCode) -> None:
    problem = Problem(code)
    assert problem.message.strip() and problem.message_ko.strip()
    assert problem.message != problem.message_ko
    assert HANGUL.search(problem.message_ko), problem.message_ko


def test_problem_wording_is_distinct_per_code() -> None:
    assert len({Problem(code).message for code in ProblemCode}) == len(ProblemCode)
    assert len({Problem(code).message_ko for code in ProblemCode}) == len(ProblemCode)


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        (
            Problem(ProblemCode.INVALID_JSON, "Expecting value"),
            {
                "code": "INVALID_JSON",
                "message": "The message is not valid JSON",
                "message_ko": "메시지가 올바른 JSON이 아닙니다",
                "detail": "Expecting value",
            },
        ),
        (
            Problem(ProblemCode.NO_ACTIVE_BATCH),
            {
                "code": "NO_ACTIVE_BATCH",
                "message": "No batch is running on this station: scan a WIP first",
                "message_ko": "진행 중인 배치가 없습니다: 먼저 WIP를 스캔하세요",
                "detail": "",
            },
        ),
    ],
    ids=["with-detail", "without-detail"],
)
def test_problem_to_dict(problem: Problem, expected: dict[str, str]) -> None:
    as_dict = problem.to_dict()
    assert as_dict == expected
    assert type(as_dict["code"]) is str


def test_problem_to_dict_keys_are_shared_with_a_mes_error() -> None:
    problem_keys = set(Problem(ProblemCode.BLOCKED).to_dict())
    assert problem_keys <= set(MesError(MesErrorCode.SERVER).to_dict())
