"""The one reader of `atlas.duckdb`: every query the project runs against an atlas lives here.

Queries are built with SQLAlchemy Core from the tables of `pipelines.atlas.schema`, so renaming a column is
one edit there, and a query naming the old column fails when the reader's tests build it, not at run time.
They run on a plain DuckDB cursor (not through a SQLAlchemy engine): each fixed statement is compiled to SQL
once (`_compiled`) and results come back as Arrow tables or tuples, so hot paths pay nothing for SQLAlchemy.

The file is opened read-only and locked down (atlas files are made to be shared, so a file must not be able
to reach out): it is ATTACHed to a fresh in-memory DuckDB instance (DuckDB caches instances by path within a
process, so reopening a swapped path with `duckdb.connect(path)` would return the old file), then external
file access and extension auto-loading are switched off and the configuration locked; a file holding views
or macros (which could run functions when read) or of another schema version is refused.
"""

from __future__ import annotations

import json
import math
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from pipelines.atlas.queries import (
    PAGE_BATCHES,
    SUMMARY_COLUMNS,
    Compiled,
    FeatureFilter,
    SortKey,
    compiled,
    feature_list,
    stored_pages,
    whole_table,
)
from pipelines.atlas.schema import SCHEMA_VERSION, features, metadata
from pipelines.atlas.tables import decode_codes
from pipelines.errors import AtlasError

__all__ = [
    "AtlasFileError",
    "AtlasReader",
    "FeatureBlock",
    "FeatureFilter",
    "ReadError",
    "SortKey",
    "feature_row",
]

LOCKDOWN = (
    "SET enable_external_access = false",
    "SET autoload_known_extensions = false",
    "SET autoinstall_known_extensions = false",
    "SET lock_configuration = true",
)
"""Applied after the ATTACH: no file, network or extension access from any query, and no way to undo it."""


ReadError = duckdb.Error
"""What a query raises when the file turns out damaged after opening (callers need not import DuckDB)."""


NULLABLE_FLOATS = tuple(c.name for c in features.columns if c.nullable and isinstance(c.type, sa.Float))
"""`features` columns that may be NULL (numpy reads a NULL as NaN)."""
JSON_COLUMNS = ("runner_ups",)
"""`features` columns stored as JSON text."""


def feature_row(row: dict[str, Any]) -> dict[str, Any]:
    """A `features` row (from a query or a block's arrays) as callers use it: JSON columns decoded, NULLs
    (NaN once read through numpy) as None, so JSON answers never hold NaN."""
    out = dict(row)
    for name in NULLABLE_FLOATS:
        value = out.get(name)
        if value is not None and math.isnan(value):
            out[name] = None
    for name in JSON_COLUMNS:
        if name in out:
            out[name] = json.loads(out[name])
    return out


class AtlasFileError(AtlasError):
    """The atlas file cannot be used: unreadable, another schema version, or holding views or macros."""


@dataclass(frozen=True)
class FeatureBlock:
    """The rows of every per-feature table for features lo..hi (inclusive), each sorted by feature id."""

    features: pa.Table
    examples: pa.Table
    """Per feature: top examples first (rank order), then quantile samples."""
    languages: pa.Table
    """Per feature: largest activation share first."""
    categories: pa.Table
    effects: pa.Table
    """Per feature: largest effect first."""
    parallel: pa.Table
    """Per feature: its parallel groups by rank, each group's clips by id (traces as float16 bytes)."""


class AtlasReader:
    """A read-only, locked-down view of one atlas file version; safe to share between threads."""

    def __init__(self, path: Path, connection: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self._connection = connection
        self._local = threading.local()

    @classmethod
    def open(cls, path: Path, memory_mb: int = 256) -> "AtlasReader":
        """Attach `path` read-only; raises `AtlasFileError` (with the reason) when it cannot be used."""
        try:
            connection = duckdb.connect(":memory:")
            connection.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
            quoted = str(path).replace("'", "''")
            connection.execute(f"ATTACH '{quoted}' AS atlas (READ_ONLY)")
            for statement in LOCKDOWN:
                connection.execute(statement)
            connection.execute("USE atlas")
        except duckdb.Error as exc:
            raise AtlasFileError(f"cannot read the atlas at {path} ({str(exc).splitlines()[0]})") from None
        reader = cls(path, connection)
        try:
            reader._check()
        except duckdb.Error as exc:
            connection.close()
            raise AtlasFileError(f"cannot read the atlas at {path} ({str(exc).splitlines()[0]})") from None
        except BaseException:
            connection.close()
            raise
        return reader

    def _check(self) -> None:
        views = [name for (name,) in self._rows("user_views")]
        macros = [name for (name,) in self._rows("user_macros")]
        if views or macros:
            raise AtlasFileError(
                f"the atlas at {self.path} holds views or macros ({', '.join(sorted(views + macros)[:5])}); "
                "an atlas holds tables only: rebuild it with `whisper-atlas build`"
            )
        tables = self._table_names()
        if "run" in tables:  # the version first: an older file lacks the newer tables, and this says why
            rows = self._rows("schema_version")
            found = json.loads(rows[0][0]) if rows else None
            if found != SCHEMA_VERSION:
                raise AtlasFileError(
                    f"the atlas at {self.path} has schema version {found}, this code reads {SCHEMA_VERSION}: "
                    "rebuild it with `whisper-atlas build`"
                )
        missing = sorted(set(metadata.tables) - tables)
        if missing:
            raise AtlasFileError(f"the atlas at {self.path} lacks the tables {missing}: rebuild it")

    def _table_names(self) -> set[str]:
        cursor = self.cursor()
        return {name for (name,) in cursor.execute("SELECT table_name FROM duckdb_tables()").fetchall()}

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "AtlasReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """The calling thread's cursor (DuckDB connections are not shared across threads).

        One cursor per thread is enough because every result is fetched completely before the next query:
        DuckDB refuses new work on a connection holding a half-read result.
        """
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._connection.cursor()
            cursor.execute("USE atlas")
            self._local.cursor = cursor
        return cursor

    def _execute(self, statement: Compiled, params: dict[str, object]) -> duckdb.DuckDBPyConnection:
        return self.cursor().execute(statement.sql, statement.values(params))

    def _rows(self, name: str, **params: object) -> list[tuple]:
        return self._execute(compiled(name), params).fetchall()

    def _arrow(self, name: str, **params: object) -> pa.Table:
        return self._arrow_of(compiled(name), params)

    def _arrow_of(self, statement: Compiled, params: dict[str, object]) -> pa.Table:
        return self.cursor().sql(statement.sql, params=statement.values(params)).to_arrow_table()

    # -- whole-atlas data ---------------------------------------------------------------------------------

    def run_metadata(self) -> dict[str, Any]:
        """The `run` table: key -> JSON-decoded value."""
        return {key: json.loads(value) for key, value in self._rows("run")}

    def clips(self) -> list[dict[str, Any]]:
        """Every clip row, by id."""
        names = [c.name for c in metadata.tables["clips"].columns]
        return [dict(zip(names, row)) for row in self._rows("clips")]

    def clip_words(self) -> dict[int, list[tuple[str, float, float]]]:
        """clip id -> its aligned words (word, start s, end s) in order."""
        words: dict[int, list[tuple[str, float, float]]] = {}
        for clip_id, word, start, end in self._rows("clip_words"):
            words.setdefault(clip_id, []).append((word, start, end))
        return words

    def clip_phones(self) -> dict[int, list[tuple[str, float, float]]]:
        """clip id -> its approximate phone intervals (phone, start s, end s) in order (none without)."""
        phones: dict[int, list[tuple[str, float, float]]] = {}
        for clip_id, phone, start, end in self._rows("clip_phones"):
            phones.setdefault(clip_id, []).append((phone, start, end))
        return phones

    def feature_index(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Every feature's id (int64), label and density, by id."""
        table = self._arrow("feature_index")
        ids = table.column("id").to_numpy().astype(np.int64)
        return ids, table.column("label").to_pylist(), table.column("density").to_numpy()

    def density_histogram(self) -> list[tuple[float, float, int]]:
        """(log10 lo, log10 hi, live features) per bin of the overview's density histogram."""
        return self._rows("density_histogram")

    def table(self, name: str) -> pa.Table:
        """A whole table of the schema, as Arrow (exports)."""
        if name not in metadata.tables:
            raise KeyError(f"unknown atlas table {name!r}")
        return self._arrow_of(whole_table(metadata.tables[name]), {})

    # -- features -------------------------------------------------------------------------------------------

    def list_features(self, spec: FeatureFilter) -> tuple[int, list[dict[str, Any]]]:
        """(matching features in all, the requested page of summary rows) for the feature list."""
        count, page, params = feature_list(spec)
        ((total,),) = self._execute(count, params).fetchall()
        rows = self._execute(page, params).fetchall()
        return total, [feature_row(dict(zip(SUMMARY_COLUMNS, row))) for row in rows]

    def type_counts(self) -> dict[str, int]:
        """Live features per type, for the types that have any (none in an atlas without scored labels)."""
        return dict(self._rows("type_counts"))

    def best_of_types(self, per_type: int) -> dict[str, list[dict[str, Any]]]:
        """Per explained type, its `per_type` best-scored live features as feature-list rows, best first."""
        best: dict[str, list[dict[str, Any]]] = {}
        for values in self._rows("best_of_types", per_type=per_type):
            row = feature_row(dict(zip(SUMMARY_COLUMNS, values)))
            best.setdefault(row["label_type"], []).append(row)
        return best

    def feature_block(self, lo: int, hi: int) -> FeatureBlock:
        """Every per-feature row of features lo..hi: one range query per table (rows sorted by feature id)."""
        return FeatureBlock(
            features=self._arrow("block_features", lo=lo, hi=hi),
            examples=self._arrow("block_examples", lo=lo, hi=hi),
            languages=self._arrow("block_languages", lo=lo, hi=hi),
            categories=self._arrow("block_categories", lo=lo, hi=hi),
            effects=self._arrow("block_effects", lo=lo, hi=hi),
            parallel=self._arrow("block_parallel", lo=lo, hi=hi),
        )

    def feature_labels(self) -> dict[int, str]:
        """Feature id -> label, for labelled features only."""
        return dict(self._rows("labelled_features"))

    def feature_types(self) -> dict[int, str]:
        """Feature id -> type (`schema.LABEL_TYPES`), for features the analysis typed."""
        return dict(self._rows("typed_features"))

    def typical_activations(self, d_sae: int) -> np.ndarray | None:
        """(d_sae,) each feature's mean activation when it fires (`features.mean_act`); None without rows.

        Ids at or beyond `d_sae` (an atlas of another SAE) are ignored."""
        table = self._arrow("typical_activations", d_sae=d_sae)
        if table.num_rows == 0:
            return None
        typical_F = np.zeros(d_sae, np.float32)
        typical_F[table.column("id").to_numpy()] = table.column("mean_act").to_numpy()
        return typical_F

    def language_effects(self, d_sae: int) -> tuple[list[str], np.ndarray] | None:
        """(languages sorted, (d_sae, L) float32 effects) from `feature_language_effects`; None when empty."""
        table = self._arrow("language_effects", d_sae=d_sae)
        if table.num_rows == 0:
            return None
        language_N = np.asarray(table.column("language").to_pylist())
        languages = sorted(set(language_N.tolist()))
        effect_FL = np.zeros((d_sae, len(languages)), np.float32)
        rows_N = table.column("feature_id").to_numpy()
        effect_FL[rows_N, np.searchsorted(languages, language_N)] = table.column("effect").to_numpy()
        return languages, effect_FL

    # -- stored pages ---------------------------------------------------------------------------------------

    def stored_page_count(self) -> int:
        """How many features have a pre-rendered page in the file (0 when it was written without)."""
        ((count,),) = self._rows("stored_page_count")
        return int(count)

    def stored_pages(self, feature_ids: list[int]) -> dict[int, bytes]:
        """feature id -> its pre-rendered page (gzip), for the ids that have one; a batch of at most
        `PAGE_BATCHES[-1]` ids in one query (32 pages cost ~3x one page: any DuckDB query costs ~1 ms)."""
        if not feature_ids:
            return {}
        if len(feature_ids) > PAGE_BATCHES[-1]:
            raise ValueError(f"at most {PAGE_BATCHES[-1]} pages per lookup, not {len(feature_ids)}")
        size = next(n for n in PAGE_BATCHES if n >= len(feature_ids))
        last = len(feature_ids) - 1
        params: dict[str, object] = {f"id{i}": feature_ids[min(i, last)] for i in range(size)}
        return dict(self._execute(stored_pages(size), params).fetchall())

    # -- clips ---------------------------------------------------------------------------------------------

    def clip_top_features(self, clip_id: int, limit: int) -> list[tuple]:
        """(feature_id, kind, start_frame, end_frame, peak_frame, peak_act, acts, label_type) of the `limit`
        features with the strongest example on the clip, each at its strongest example, strongest first."""
        return self._rows("clip_top_features", clip_id=clip_id, limit=limit)

    def frame_codes(self, clip_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(features_TK uint16, acts_TK float32) of every frame of the clip (`schema.frame_codes`), or None
        when the atlas holds none for it."""
        rows = self._rows("frame_codes", clip_id=clip_id)
        if not rows:
            return None
        n_frames, k, feature_ids, acts = rows[0]
        try:
            return decode_codes(feature_ids, acts, n_frames, k)
        except (ValueError, zlib.error):
            raise AtlasFileError(f"clip {clip_id}'s frame codes are damaged: rebuild the atlas") from None

    def window_candidates(self, feature_ids: list[int], max_rank: int) -> pa.Table:
        """(window_id, feature_id, weight) of the first `max_rank` postings of each feature given."""
        return self._arrow("window_candidates", features=feature_ids, max_rank=max_rank)

    def window_sketches(self, window_ids: list[int]) -> pa.Table:
        """The `similar_windows` rows of the windows given (any order)."""
        return self._arrow("window_sketches", ids=window_ids)

    def window_scores(self, feature_ids: list[int], weights: list[float]) -> pa.Table:
        """(window_id, clip_id, start_frame, end_frame, score) of every window sharing a feature with the
        query, scored from all the postings (the exhaustive reference of the index)."""
        return self._arrow("window_scores", features=feature_ids, weights=weights)

    def feature_map(self) -> pa.Table:
        """(feature_id, x, y, label, label_type, top_language, density) of every mapped feature, by id."""
        return self._arrow("feature_map")

    def clip_mel(self, clip_id: int) -> tuple[int, int, bytes] | None:
        """(n_mels, n_frames, uint8 bytes) of the clip's stored log-mel, or None."""
        rows = self._rows("clip_mel", clip_id=clip_id)
        return rows[0] if rows else None
