"""Codes for open sets of values (words, phones, speakers): numbered as met, renumbered sorted at the end."""

from __future__ import annotations

import numpy as np


class Vocabulary:
    """Interns values as they are met, so per-clip work stays in integers; "" is never a value (-1)."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def code(self, value: str) -> int:
        if not value:
            return -1
        return self._codes.setdefault(value, len(self._codes))

    def finish(self, codes_N: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """`codes_N` (as `code` numbered them) renumbered in sorted order of the values, and those values."""
        names = sorted(self._codes)
        new_code = np.empty(len(self._codes) + 1, dtype=np.int32)
        new_code[-1] = -1  # index -1: not applicable stays -1
        for rank, name in enumerate(names):
            new_code[self._codes[name]] = rank
        return new_code[codes_N], names
