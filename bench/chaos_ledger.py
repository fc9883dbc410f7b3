"""What the chaos run sent, held against what the MES recorded (pure: no I/O).

Each 완공 a station sends carries its own mark: `notes` = "chaos <seq>" and a measurement
`chaos_seq` = <seq>, where seq numbers the batches in the order the stations ran them. The MES
stores both, so every row of its history names the one message it came from. That is how a
duplicate (the same mark twice) is told from a legitimate retry (a FAIL and then a PASS of the
same process: two messages, two marks), and how a record applied to the wrong batch (one mark,
another batch's WIP or process) is caught.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MARK = "chaos_seq"
_NOTES = re.compile(r"^chaos (\d+)$")


def notes_for(seq: int) -> str:
    return f"chaos {seq}"


@dataclass(frozen=True)
class SentRecord:
    """A 완공 the broker acknowledged from a station (so the bridge owes it to the MES)."""

    seq: int
    wip_id: str
    process: int
    result: str

    def describe(self) -> str:
        return f"{self.wip_id} process {self.process} {self.result} (batch #{self.seq})"


@dataclass
class Verdict:
    expected: int  # 완공 sent + conversions owed
    recorded: int  # of those, found at the MES
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # a row that is not what was sent

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.mismatched)


def compare(
    sent: Sequence[SentRecord], conversions: Iterable[str], ledger: Mapping[str, Any]
) -> Verdict:
    """`conversions`: the WIPs that must end CONVERTED. `ledger`: the simulator's /sim/ledger."""
    by_seq = {record.seq: record for record in sent}
    owed_conversions = set(conversions)
    converted = {w["wip_id"] for w in ledger["wips"] if w["status"] == "CONVERTED"}
    verdict = Verdict(expected=len(by_seq) + len(owed_conversions), recorded=0)

    rows_of: dict[int, list[int]] = defaultdict(list)  # seq -> ledger row ids
    order: dict[str, list[int]] = defaultdict(list)  # wip -> seqs in the MES's order
    for row in ledger["history"]:
        seq = _seq_of(row)
        record = by_seq.get(seq) if seq is not None else None
        if record is None or not _matches(row, record):
            verdict.mismatched.append(_row_text(row, record))
        if seq is not None:
            rows_of[seq].append(row["id"])
            if len(rows_of[seq]) == 1:
                order[row["wip_id"]].append(seq)

    for seq, record in sorted(by_seq.items()):
        ids = rows_of.get(seq, [])
        if not ids:
            verdict.lost.append(record.describe())
        elif len(ids) > 1:
            verdict.duplicated.append(f"{record.describe()}: {len(ids)} rows (ids {ids})")
    verdict.recorded = sum(1 for seq in by_seq if rows_of.get(seq))
    for wip_id in sorted(owed_conversions):
        if wip_id in converted:
            verdict.recorded += 1
        else:
            verdict.lost.append(f"{wip_id} conversion to a serial number")

    for wip_id, seqs in sorted(order.items()):
        highest = -1
        for seq in seqs:
            if seq < highest:
                verdict.out_of_order.append(
                    f"{wip_id}: batch #{seq} recorded after #{highest} (MES order {seqs})"
                )
            highest = max(highest, seq)
    return verdict


def _seq_of(row: Mapping[str, Any]) -> int | None:
    found = _NOTES.match(str(row.get("notes") or ""))
    return int(found.group(1)) if found else None


def _matches(row: Mapping[str, Any], record: SentRecord) -> bool:
    return (
        row["wip_id"] == record.wip_id
        and row["process_number"] == record.process
        and row["result"] == record.result
        and (row.get("measurements") or {}).get(MARK) == record.seq
    )


def _row_text(row: Mapping[str, Any], record: SentRecord | None) -> str:
    mark = (row.get("measurements") or {}).get(MARK)
    got = (
        f"MES row {row['id']}: {row['wip_id']} process {row['process_number']} {row['result']}, "
        f"notes {row.get('notes')!r}, {MARK} {mark}"
    )
    return f"{got}; sent as {record.describe()}" if record else f"{got}; no station sent it"


def tally(codes: Iterable[str]) -> str:
    """`A 2, B 1` (most first), or `0`."""
    counts = Counter(codes)
    return ", ".join(f"{code} {n}" for code, n in counts.most_common()) or "0"
