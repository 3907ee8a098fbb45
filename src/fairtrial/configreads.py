"""Which config keys a trial actually read, and the keys no trial ever read.

A recipe without a config class receives a plain mapping: a key it never looks at (``epoch``
for ``epochs``) is silently ignored, and the trial runs on the recipe's default. So each trial
records the keys it read (:class:`ReadRecorder`; for a command recipe, the keys whose
placeholder the command line uses) and the run warns about the keys no trial of an arm read
(:func:`unread_config`). Recipes with a config class are checked against it when the spec
loads (:func:`fairtrial.recipes.build_config`) and record nothing here.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fairtrial.ledger import Ledger

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class ReadRecorder(dict[str, Any]):
    """A ``dict`` that records which keys are read, as dotted paths (``optimizer.lr``).

    ``[]``, ``get``, ``in``, ``pop``, ``setdefault`` read one key; iterating, ``keys()``,
    ``values()`` and ``items()`` (so ``dict(config)``, ``{**config}``, ``Cls(**config)`` and
    ``json.dumps(config)``) read every key of that level. Nested tables are recorders too,
    sharing one set of reads. Copies (``copy``, ``deepcopy``, ``|``) keep recording into the
    same set; pickling gives a plain ``dict`` (reads in another process are not seen).
    """

    __slots__ = ("_prefix", "_reads")

    def __init__(
        self, data: Mapping[str, Any], reads: set[str] | None = None, prefix: str = ""
    ) -> None:
        self._reads: set[str] = set() if reads is None else reads
        self._prefix = prefix
        super().__init__(
            (k, ReadRecorder(v, self._reads, f"{prefix}{k}.") if isinstance(v, Mapping) else v)
            for k, v in data.items()
        )

    @property
    def reads(self) -> set[str]:
        """The dotted keys read so far (shared with every nested table and copy)."""
        return self._reads

    def _read(self, key: object) -> None:
        self._reads.add(f"{self._prefix}{key}")

    def _read_all(self) -> None:
        for key in dict.keys(self):
            self._read(key)

    def __getitem__(self, key: str) -> Any:
        self._read(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._read(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._read(key)
        return super().__contains__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._read(key)
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._read(key)
        return super().setdefault(key, default)

    def __iter__(self) -> Iterator[str]:
        self._read_all()
        return super().__iter__()

    def keys(self) -> Any:
        self._read_all()
        return super().keys()

    def values(self) -> Any:
        self._read_all()
        return super().values()

    def items(self) -> Any:
        self._read_all()
        return super().items()

    def plain(self) -> dict[str, Any]:
        """A plain, deep ``dict`` copy that records nothing (and reads nothing)."""
        return {
            k: v.plain() if isinstance(v, ReadRecorder) else copy.deepcopy(v)
            for k, v in dict.items(self)
        }

    def copy(self) -> ReadRecorder:
        return ReadRecorder(self.plain(), self._reads, self._prefix)

    def __copy__(self) -> ReadRecorder:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadRecorder:
        return self.copy()

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        return ReadRecorder({**self.plain(), **other}, self._reads, self._prefix)

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        self._read_all()
        return {**other, **self.plain()}

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (dict, (self.plain(),))


def command_reads(command: str) -> list[str]:
    """The config keys a command line reads: its ``{placeholders}`` (``{{`` is a brace) but
    those the trial fills itself (``{seed}``, ``{data_dir}``, ...: they win over the config)."""
    from fairtrial.spec import COMMAND_FIELDS

    text = command.replace("{{", "").replace("}}", "")
    return sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(COMMAND_FIELDS))


def unread_config(
    trials: Iterable[tuple[str, Mapping[str, Any], Sequence[str]]],
) -> dict[str, Any] | None:
    """The config keys no trial of an arm read, from (arm, config, keys read) per trial.

    Pass the finished trials that recorded their reads. Returns None when every key was read
    (or nothing was recorded), else ``{"unread": {key: [arms]}, "read": [keys read],
    "suggest": {key: close match among the keys read}}``.
    """
    from fairtrial.spec import flatten

    keys: dict[str, set[str]] = {}
    read: dict[str, set[str]] = {}
    for arm, config, reads in trials:
        keys.setdefault(arm, set()).update(flatten(config))
        read.setdefault(arm, set()).update(reads)
    unread: dict[str, list[str]] = {}
    for arm in keys:  # arms in the order their trials came
        for key in sorted(keys[arm] - read[arm]):
            unread.setdefault(key, []).append(arm)
    if not unread:
        return None
    every_key = set().union(*keys.values())
    tables = {k.rsplit(".", i)[0] for k in every_key for i in range(1, k.count(".") + 1)}
    every_read = sorted(set().union(*read.values()) - tables)  # leaves: "optimizer.lr"
    # the intended key is one the recipe looked for that the config does not have (a key it
    # read from the config is already set, so it cannot be what the typo meant)
    missing = [k for k in every_read if k not in every_key]
    suggest: dict[str, str] = {}
    for key in unread:
        if match := difflib.get_close_matches(key, missing, n=1):
            suggest[key] = match[0]
    return {"unread": unread, "read": every_read, "suggest": suggest}


def unread_text(found: Mapping[str, Any], command: bool = False) -> str:
    """One line naming the unread keys, their arms, a did-you-mean and the keys read."""
    parts = []
    for key, arms in found["unread"].items():
        hint = f"; did you mean '{found['suggest'][key]}'?" if key in found["suggest"] else ""
        parts.append(f"'{key}' ({', '.join(arms)}{hint})")
    what = "no {placeholder} of the command uses" if command else "no trial of the recipe read"
    plural = "s" if len(parts) > 1 else ""
    read = ", ".join(found["read"]) or "none"
    tail = " (a command reading $FAIRTRIAL_CONFIG may still use it)" if command else ""
    return (
        f"config key{plural} {', '.join(parts)}: {what} {'them' if plural else 'it'}, so "
        f"{'they have' if plural else 'it has'} no effect{tail}; "
        f"{'placeholders used' if command else 'keys read'}: {read}"
    )


def experiment_unread(ledger: Ledger, experiment_id: str) -> dict[str, Any] | None:
    """:func:`unread_config` over the finished trials of an experiment in ``ledger``."""
    reads = ledger.config_reads(experiment_id)
    if not reads:
        return None
    return unread_config(
        (t.arm, t.config, reads[t.id])
        for t in ledger.trials(experiment_id)
        if t.status == "finished" and t.id in reads
    )
