"""A dry run's plan, object by object, as the run decides it.

Each planned object goes to a sink as it is decided (``icanhazmodel.plan``
streams them: a million keys stay a few MiB), or into the plan returned at
the end; the counts per action and the bytes to download are kept as they
come, so the totals never need the whole list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from os import PathLike

from ._models import Action, Plan, PlannedObject, RemoteObject


class PlanBook:
    """What a dry run would do."""

    def __init__(self, sink: Callable[[PlannedObject], None] | None = None) -> None:
        self._sink = sink
        self._objects: list[PlannedObject] = []
        self._counts: Counter[Action] = Counter()
        self._bytes = 0

    def add(
        self, obj: RemoteObject, path: PathLike[str] | str, action: Action, reason: str = ""
    ) -> None:
        self._counts[action] += 1
        if action is Action.DOWNLOAD:
            self._bytes += obj.size
        planned = PlannedObject(obj.key, obj.size, str(path), action, reason)
        if self._sink is not None:
            self._sink(planned)
        else:
            self._objects.append(planned)

    def plan(self, *, excluded: int, other_shards: int, free_bytes: int | None) -> Plan:
        return Plan(
            tuple(self._objects),
            excluded=excluded,
            other_shards=other_shards,
            free_bytes=free_bytes,
            counts=dict(self._counts),
            download_bytes=self._bytes,
        )
