"""The pinned checksum of every built-in task, and the check each task's factory makes.

A built-in task is only ever used with the data, labels and split indices it was released
with: its factory builds it, then :func:`verified` compares its :attr:`Task.checksum` with the
pin here, so a trial can never silently run on data or splits that differ from the ones every
other trial was recorded on (a changed generator, a package that ships a different file).
"""

from __future__ import annotations

from fairtrial.errors import TaskError
from fairtrial.tasks.base import Task

__all__ = ["PINNED_CHECKSUMS", "verified"]

#: sha256 :attr:`Task.checksum` of each built-in task (data, labels and split indices).
PINNED_CHECKSUMS: dict[str, str] = {
    "digits": "5372c8bcc82b33522dda585d5e3b9d824dec83c733bd0d91dd107a9c39a82fc5",
    "breast_cancer": "ffb10bfc18f4b96711793220d1419e11d720d04f85db3d268c395e976c1ca957",
    "mnist1d": "ec516c080a8cb655084f8619386cda99ab91e2d54d20f676b1be3916dd01ac0b",
    "modular_addition": "a37d3bf59a8df155b4e82cf0fcb824aa5c0d1655c94b9caa44a4c1b24527bdd7",
    "iris": "b6263764ab938f73bf116bcd9e789b6d0c26b2bad6eb4ae06c70b97178b67bad",
    "wine": "d804032212be2e09d89bd332379382fd836cde599328daa985728c6d157d89cb",
    "diabetes": "ea9a24ed3bda0ed89f42fae1db5be055a2f81bbc982874989cf4c6cd642b7e82",
    "mnist5k": "7cc587c499f4307faed81053f63aaaf8efcd0c7be7ef746aa692ab681de9c365",
    "gunpoint": "400e8fcda3a12bb16badeadd07930f7fd6dd59426f72ba23a509bb858b9d6b7a",
    "italy_power_demand": "6ae38bc621852b971e158c4352763e06acbabada0fa879a22398f493fc5a1dda",
}


def verified(task: Task) -> Task:
    """Return ``task`` if its checksum is the pinned one, else raise :class:`TaskError`."""
    expected = PINNED_CHECKSUMS[task.name]
    got = task.checksum
    if got != expected:
        raise TaskError(
            f"built-in task '{task.name}': checksum {got} differs from the pinned {expected}. "
            "The data, the labels or the split indices are not the ones fairtrial was released "
            "with: either the generation or split code changed, or the dataset file bundled "
            "with this install (e.g. scikit-learn's) differs. Results on this task would not be "
            "comparable with results recorded elsewhere."
        )
    return task
