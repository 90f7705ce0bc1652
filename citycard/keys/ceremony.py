"""Key ceremony rules: a master key entered as 2 or 3 clear components held by different
custodians, the stored key being their XOR (docs/keys.md, "Key ceremony").

The rules live here; the command line only asks for the components at hidden prompts and
shows the key check values.  A :class:`Ceremony` takes the typed components one by one:

- a component is exactly 16 bytes of hex digits (spaces allowed), not all zeros
  (:class:`ComponentRejected`: the custodian may type it again, at most
  :data:`MAX_ATTEMPTS` times);
- a component equal to an earlier one is refused outright (the two would cancel out);
- the combined key is refused when it is all zeros; a 2-key 3DES key whose halves are
  equal (single-DES strength) is reported by :meth:`Ceremony.weak`.

Nothing here ever puts a component or the key into a message.
"""

from __future__ import annotations

from ..errors import InputError
from ..crypto import xor
from .keystore import KEY_LENGTH, key_kcv

#: tries a custodian gets to type one valid component
MAX_ATTEMPTS = 3
#: how many components a ceremony may combine
COMPONENT_COUNTS = (2, 3)


class ComponentRejected(InputError):
    """A typed component is not a valid component; the custodian may type it again."""


class Ceremony:
    """One master key assembled from ``count`` components (see the module docstring)."""

    def __init__(self, count: int, algorithm: str) -> None:
        if count not in COMPONENT_COUNTS:
            raise InputError(f"a key ceremony takes 2 or 3 components, not {count}")
        self.count, self.algorithm = count, algorithm
        self._parts: list[bytes] = []

    @property
    def next_index(self) -> int:
        """The 1-based number of the component expected next."""
        return len(self._parts) + 1

    @property
    def complete(self) -> bool:
        return len(self._parts) == self.count

    def add(self, typed: str) -> bytes:
        """Take the next component as typed; return its key check value (3 bytes).

        :class:`ComponentRejected` for a malformed component (may be typed again);
        :class:`InputError` when it equals an earlier component (the ceremony stops)."""
        i = self.next_index
        if self.complete:
            raise InputError(f"all {self.count} components are already given")
        clean = "".join(typed.split())
        try:
            comp = bytes.fromhex(clean)
        except ValueError:
            raise ComponentRejected(f"component {i}: not hex digits") from None
        if len(comp) != KEY_LENGTH:
            raise ComponentRejected(f"component {i}: {len(clean)} hex digits, expected {2 * KEY_LENGTH}")
        if not any(comp):
            raise ComponentRejected(f"component {i}: all zeros")
        for j, earlier in enumerate(self._parts, 1):
            if comp == earlier:
                raise InputError(f"component {i} equals component {j}; nothing stored")
        self._parts.append(comp)
        return key_kcv(comp, self.algorithm)

    def key(self) -> bytes:
        """The combined key (the XOR of the components); refused when all zeros."""
        if not self.complete:
            raise InputError(f"{len(self._parts)} of {self.count} components given")
        key = self._parts[0]
        for comp in self._parts[1:]:
            key = xor(key, comp)
        if not any(key):
            raise InputError("the components combine to an all-zero key; nothing stored")
        return key

    def forget(self) -> None:
        """Drop the components (after the key is stored or the ceremony abandoned)."""
        self._parts.clear()


def weak(key: bytes, algorithm: str) -> bool:
    """Whether a 2-key 3DES key has equal halves (it then works as single DES)."""
    return algorithm == "3des" and key[:8] == key[8:]


def too_many_attempts(index: int) -> InputError:
    """The error ending a ceremony when component ``index`` was not typed right in time."""
    return InputError(f"component {index}: no valid component after {MAX_ATTEMPTS} attempts; nothing stored")
