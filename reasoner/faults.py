"""Fault injection: a switch the stages honour, to prove that a failed write or a killed worker loses nothing.

``REASONER_FAULT`` names the points to fail, as ``<point>:<n>[:<action>]`` (several separated by
commas)::

    REASONER_FAULT=rundir.write_batch:after_rejected:2          # raise the 2nd time a process gets there
    REASONER_FAULT=rundir.write_batch:after_commit:1:exit       # die there (os._exit), as a killed worker

``raise`` (the default) raises :class:`InjectedFault`, as a full disk or a lost bucket would make a
write fail; ``exit`` ends the process at once with status 137, as ``kill -9`` or a lost node would
(use it in Ray workers, never in the driver of a test). The run directory reads the variable when it
is made (``reasoner.rundir.RunDir``), so the switch travels with it to the Ray workers, and it
fires each fault at most once per run directory: a restarted worker or a rerun goes past it.

The points (all in ``reasoner.rundir``):

- ``rundir.write_batch:after_rejected``: a batch's rejections are staged, its rows are not;
- ``rundir.write_batch:after_rows``: both are staged, not committed (a part half made);
- ``rundir.write_batch:after_commit``: the part is committed, not yet published;
- ``rundir.write_batch:mid_publish``: the first of its two files is in place, the second is not;
- ``rundir.write_batch:after_publish``: the part is done, its worker has not reported it;
- ``rundir.finish:before_manifest``: every part is done, the manifest is not written.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field

ENV = "REASONER_FAULT"
ACTIONS = ("raise", "exit")
EXIT_STATUS = 137  # what a shell reports for a process killed by SIGKILL

POINTS = (
    "rundir.write_batch:after_rejected",
    "rundir.write_batch:after_rows",
    "rundir.write_batch:after_commit",
    "rundir.write_batch:mid_publish",
    "rundir.write_batch:after_publish",
    "rundir.finish:before_manifest",
)
"""Every point the code reaches (a fault naming another is refused, so a typo cannot pass silently)."""


class InjectedFault(RuntimeError):
    """The failure a ``raise`` fault injects."""


@dataclass(frozen=True)
class Fault:
    """Fail the ``nth`` time a process reaches ``point``, by ``action`` ("raise" or "exit")."""

    point: str
    nth: int = 1
    action: str = "raise"

    @property
    def spec(self) -> str:
        return f"{self.point}:{self.nth}:{self.action}"

    @property
    def slug(self) -> str:
        """A file-name-safe form of the fault."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.spec)


def parse(spec: str | None) -> tuple[Fault, ...]:
    """The faults ``spec`` names (``<point>:<n>[:<action>]``, comma-separated); () for None or "".

    Raises ValueError naming the bad entry and the form it should have.
    """
    faults = []
    for entry in (spec or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        fields = entry.split(":")
        action = fields.pop() if fields[-1] in ACTIONS else "raise"
        nth = fields.pop() if len(fields) > 1 and fields[-1].isdigit() else None
        point = ":".join(fields)
        if nth is None or int(nth) < 1 or point not in POINTS:
            raise ValueError(
                f"{ENV}={spec!r}: {entry!r} is not <point>:<n>[:raise|exit] with n >= 1 and a point among "
                f"{', '.join(POINTS)}")
        faults.append(Fault(point, int(nth), action))
    return tuple(faults)


@dataclass
class FaultPlan:
    """The faults of a spec and how often this process reached each point."""

    faults: tuple[Fault, ...] = ()
    hits: Counter = field(default_factory=Counter)

    @classmethod
    def from_spec(cls, spec: str | None) -> FaultPlan:
        return cls(parse(spec))

    def __bool__(self) -> bool:
        return bool(self.faults)

    def reach(self, point: str) -> Fault | None:
        """Count a visit to ``point``; the fault due on this visit, if any."""
        if not any(f.point == point for f in self.faults):
            return None
        self.hits[point] += 1
        return next((f for f in self.faults if f.point == point and f.nth == self.hits[point]), None)


def fire(fault: Fault) -> None:
    """Fail as ``fault`` says: raise :class:`InjectedFault`, or end the process at once."""
    if fault.action == "exit":
        os._exit(EXIT_STATUS)
    raise InjectedFault(f"injected fault {fault.spec} ({ENV})")
