"""bridge.core.topics: the names of every topic, and which inbound topics are accepted."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.core.topics import Inbound, ResultKind, Topics

PREFIX = "plant1/line2"


@pytest.mark.parametrize(
    ("prefix", "topic", "expected"),
    [
        ("", "station/3/batch/start", ("3", Inbound.START)),
        ("", "station/3/measurement", ("3", Inbound.MEASUREMENT)),
        ("", "station/3/batch/complete", ("3", Inbound.COMPLETE)),
        ("", "station/3/batch/abort", ("3", Inbound.ABORT)),
        ("", "station/3/wip/convert", ("3", Inbound.CONVERT)),
        ("", "station/eol-A_2/batch/start", ("eol-A_2", Inbound.START)),
        (PREFIX, f"{PREFIX}/station/3/batch/start", ("3", Inbound.START)),
        (PREFIX, f"{PREFIX}/station/7/measurement", ("7", Inbound.MEASUREMENT)),
        (PREFIX, f"{PREFIX}/station/7/wip/convert", ("7", Inbound.CONVERT)),
    ],
    ids=[
        "start",
        "measurement",
        "complete",
        "abort",
        "convert",
        "station-id-with-dash-underscore",
        "prefixed-start",
        "prefixed-measurement",
        "prefixed-convert",
    ],
)
def test_parse_accepts_inbound_topics(
    prefix: str, topic: str, expected: tuple[str, Inbound]
) -> None:
    assert Topics(prefix).parse(topic) == expected


@pytest.mark.parametrize(
    ("prefix", "topic"),
    [
        ("", "station/3/batch/start/extra"),
        ("", "station/3/batch"),
        ("", "station/3"),
        ("", "station"),
        ("", ""),
        ("", "station/3/measurement/live"),
        ("", "station/3/result/started"),
        ("", "station/3/result/error"),
        ("", "station/3/status"),
        ("", "station/3/device/gauge1/status"),
        ("", "bridge/b1/availability"),
        ("", "station//batch/start"),
        ("", "/station/3/batch/start"),
        ("", "stations/3/batch/start"),
        ("", "station/3/batch/START"),
        ("", "plant1/line2/station/3/batch/start"),
        (PREFIX, "station/3/batch/start"),
        (PREFIX, "plant1/line3/station/3/batch/start"),
        (PREFIX, "plant1/line2x/station/3/batch/start"),
        (PREFIX, "plant1/station/3/batch/start"),
        (PREFIX, f"{PREFIX}/station/3/measurement/live"),
        (PREFIX, f"{PREFIX}/station/3/result/completed"),
        (PREFIX, f"{PREFIX}/station//batch/start"),
        (PREFIX, f"{PREFIX}/station/3/batch/start/x"),
        (PREFIX, f"{PREFIX}/other/3/batch/start"),
    ],
    ids=[
        "extra-level",
        "kind-cut-short",
        "no-kind",
        "only-station",
        "empty",
        "measurement-live",
        "result-started",
        "result-error",
        "status",
        "device-status",
        "availability",
        "empty-station-id",
        "leading-slash",
        "stations-plural",
        "kind-wrong-case",
        "unprefixed-bridge-sees-prefixed-topic",
        "prefixed-bridge-sees-bare-topic",
        "other-prefix",
        "prefix-as-substring",
        "prefix-cut-short",
        "prefixed-measurement-live",
        "prefixed-result",
        "prefixed-empty-station-id",
        "prefixed-extra-level",
        "prefixed-not-station",
    ],
)
def test_parse_refuses_other_topics(prefix: str, topic: str) -> None:
    assert Topics(prefix).parse(topic) is None


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (
            "",
            [
                "station/ST01/batch/start",
                "station/ST01/measurement",
                "station/ST01/batch/complete",
                "station/ST01/batch/abort",
                "station/ST01/wip/convert",
            ],
        ),
        (
            PREFIX,
            [
                f"{PREFIX}/station/ST01/batch/start",
                f"{PREFIX}/station/ST01/measurement",
                f"{PREFIX}/station/ST01/batch/complete",
                f"{PREFIX}/station/ST01/batch/abort",
                f"{PREFIX}/station/ST01/wip/convert",
            ],
        ),
    ],
    ids=["bare", "prefixed"],
)
def test_subscriptions_cover_every_inbound_kind(prefix: str, expected: list[str]) -> None:
    assert Topics(prefix).subscriptions(["ST01"]) == expected


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "prefixed"])
def test_subscriptions_name_the_configured_stations_only(prefix: str) -> None:
    topics = Topics(prefix)
    subscribed = topics.subscriptions(["1", "s-9"])
    assert len(subscribed) == 2 * len(Inbound)
    assert all("+" not in topic and "#" not in topic for topic in subscribed)
    for kind in Inbound:
        assert topics.inbound("1", kind) in subscribed
        assert topics.inbound("s-9", kind) in subscribed
    assert {topics.parse(topic)[0] for topic in subscribed if topics.parse(topic)} == {"1", "s-9"}


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "prefixed"])
@pytest.mark.parametrize("kind", list(Inbound), ids=[kind.name for kind in Inbound])
def test_parse_reads_back_every_inbound_name(prefix: str, kind: Inbound) -> None:
    topics = Topics(prefix)
    assert topics.parse(topics.inbound("s-9", kind)) == ("s-9", kind)


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "prefixed"])
@pytest.mark.parametrize("kind", list(ResultKind), ids=[kind.name for kind in ResultKind])
def test_result_topics_are_never_parsed_as_inbound(prefix: str, kind: ResultKind) -> None:
    topics = Topics(prefix)
    assert topics.parse(topics.result("3", kind)) is None


@pytest.mark.parametrize(
    ("prefix", "name", "expected"),
    [
        ("", lambda t: t.result("3", ResultKind.STARTED), "station/3/result/started"),
        ("", lambda t: t.result("3", ResultKind.COMPLETED), "station/3/result/completed"),
        ("", lambda t: t.result("3", ResultKind.SERIAL), "station/3/result/serial"),
        ("", lambda t: t.result("3", ResultKind.ERROR), "station/3/result/error"),
        ("", lambda t: t.result("3", ResultKind.SYNCED), "station/3/result/synced"),
        ("", lambda t: t.results(), "station/+/result/+"),
        ("", lambda t: t.results("3"), "station/3/result/+"),
        ("", lambda t: t.status("3"), "station/3/status"),
        ("", lambda t: t.live("3"), "station/3/measurement/live"),
        ("", lambda t: t.device_status("3", "gauge1"), "station/3/device/gauge1/status"),
        ("", lambda t: t.availability("b1"), "bridge/b1/availability"),
        ("", lambda t: t.inbound("3", Inbound.START), "station/3/batch/start"),
        ("p", lambda t: t.result("3", ResultKind.ERROR), "p/station/3/result/error"),
        (PREFIX, lambda t: t.results(), f"{PREFIX}/station/+/result/+"),
        (PREFIX, lambda t: t.status("3"), f"{PREFIX}/station/3/status"),
        (PREFIX, lambda t: t.live("3"), f"{PREFIX}/station/3/measurement/live"),
        (
            PREFIX,
            lambda t: t.device_status("3", "g"),
            f"{PREFIX}/station/3/device/g/status",
        ),
        (PREFIX, lambda t: t.availability("b1"), f"{PREFIX}/bridge/b1/availability"),
        (PREFIX, lambda t: t.inbound("3", Inbound.CONVERT), f"{PREFIX}/station/3/wip/convert"),
        ("", lambda t: t.bridge_error("b1"), "bridge/b1/error"),
        (PREFIX, lambda t: t.bridge_error("b1"), f"{PREFIX}/bridge/b1/error"),
    ],
    ids=[
        "result-started",
        "result-completed",
        "result-serial",
        "result-error",
        "result-synced",
        "results-all-stations",
        "results-one-station",
        "status",
        "live",
        "device-status",
        "availability",
        "inbound",
        "short-prefix-result",
        "prefixed-results",
        "prefixed-status",
        "prefixed-live",
        "prefixed-device-status",
        "prefixed-availability",
        "prefixed-inbound",
        "bridge-error",
        "prefixed-bridge-error",
    ],
)
def test_outbound_topic_names(prefix: str, name: Callable[[Topics], str], expected: str) -> None:
    assert name(Topics(prefix)) == expected
