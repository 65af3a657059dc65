"""Feature blocks in memory: the per-feature rows of a range of feature ids, as numpy columns.

DuckDB is a column store: a point lookup costs about a millisecond whatever its size, so a feature page built
from one query per table would spend ~10 ms in the database alone. Instead the per-feature tables (rows sorted
by feature id, see pipelines/atlas/schema.py) are read a *block* of features at a time, one range query per
table (`AtlasReader.feature_block`), and a page slices arrays already in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.atlas.reader import FeatureBlock


class ColumnIndex:
    """An Arrow table as numpy columns (list columns as offsets + flat values), rows grouped by a key column.

    Rows must arrive sorted by `key`; `rows(k)` then returns the rows of key `k` as dicts of plain Python
    values, converting only those rows (a block holds tens of thousands, a page needs a few dozen).
    """

    def __init__(self, table: pa.Table, key: str) -> None:
        self.scalars: dict[str, np.ndarray] = {}
        self.lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in table.column_names:
            column = table.column(name).combine_chunks()
            if pa.types.is_list(column.type):
                self.lists[name] = (column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False))
            else:
                self.scalars[name] = column.to_numpy(zero_copy_only=False)
        keys = self.scalars[key]
        firsts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        lasts = np.r_[firsts[1:], len(keys)]
        self.ranges: dict[int, tuple[int, int]] = {
            int(keys[a]): (int(a), int(b)) for a, b in zip(firsts.tolist(), lasts.tolist())
        }
        self.nbytes = sum(_nbytes(v) for v in self.scalars.values()) + sum(
            o.nbytes + _nbytes(v) for o, v in self.lists.values()
        )

    def rows(self, key: int) -> list[dict]:
        a, b = self.ranges.get(key, (0, 0))
        columns = {name: values[a:b].tolist() for name, values in self.scalars.items()}
        for name, (offsets, values) in self.lists.items():
            columns[name] = [values[offsets[i] : offsets[i + 1]].tolist() for i in range(a, b)]
        return [dict(zip(columns, row)) for row in zip(*columns.values())]


def _nbytes(array: np.ndarray) -> int:
    """Memory of a numpy array, counting the Python strings of object arrays (~60 bytes each) and the
    contents of binary ones (the parallel traces)."""
    if array.dtype != object:
        return array.nbytes
    return array.nbytes + 60 * len(array) + sum(len(v) for v in array.tolist() if isinstance(v, bytes))


@dataclass
class IndexedBlock:
    """The rows of every per-feature table for one range of feature ids, indexed by feature id."""

    features: ColumnIndex
    examples: ColumnIndex
    languages: ColumnIndex
    categories: ColumnIndex
    effects: ColumnIndex
    parallel: ColumnIndex

    @classmethod
    def of(cls, block: FeatureBlock) -> "IndexedBlock":
        return cls(
            features=ColumnIndex(block.features, "id"),
            examples=ColumnIndex(block.examples, "feature_id"),
            languages=ColumnIndex(block.languages, "feature_id"),
            categories=ColumnIndex(block.categories, "feature_id"),
            effects=ColumnIndex(block.effects, "feature_id"),
            parallel=ColumnIndex(block.parallel, "feature_id"),
        )

    @property
    def nbytes(self) -> int:
        return sum(
            c.nbytes
            for c in (
                self.features,
                self.examples,
                self.languages,
                self.categories,
                self.effects,
                self.parallel,
            )
        )
