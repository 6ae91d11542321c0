"""Skipped rows and missing images, summarised by reason (never one log line per file).

COVIDx runs skip tens of thousands of rows (RSNA labels without DICOMs, 'No Lung Opacity'
rows): the log gets a count and the first few paths per reason, split.json the full list.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)
SHOWN = 5


class Skipped(Protocol):
    where: str
    reason: str


def reason_kind(reason: str) -> str:
    """Group reasons ("not a frontal view ('L')" -> "not a frontal view")."""
    return reason.split(" (")[0].split(" of ")[0].split(": ")[0]


def counts(skips: Iterable[Skipped]) -> dict[str, int]:
    return dict(Counter(reason_kind(s.reason) for s in skips).most_common())


def summary(skips: Iterable[Skipped], shown: int = SHOWN) -> dict[str, dict]:
    """{reason kind: {"count": n, "first": [first `shown` places]}}, largest first."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for s in skips:
        by_kind[reason_kind(s.reason)].append(s.where)
    ordered = sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {kind: {"count": len(places), "first": places[:shown]} for kind, places in ordered}


def log_summary(skips: list[Skipped], what: str = "row(s)", shown: int = SHOWN) -> None:
    by_kind: dict[str, list[Skipped]] = defaultdict(list)
    for s in skips:
        by_kind[reason_kind(s.reason)].append(s)
    for kind, group in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        log.warning("skipped %d %s: %s", len(group), what, kind)
        for s in group[:shown]:
            log.warning("    %s: %s", s.where, s.reason)
        if len(group) > shown:
            log.warning("    ... and %d more (all listed in split.json)", len(group) - shown)
