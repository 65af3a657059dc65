"""What the atlas reader's SQLAlchemy-built statements cost against hand-written SQL, on the page paths.

The reader (pipelines/atlas/reader.py) runs statements built with SQLAlchemy Core from the schema. Fixed ones
(a feature block: five range queries) are compiled once per process; the feature list's once per filter
shape (which filters are set), with the values bound per request. So both should cost what the same SQL
typed by hand costs. This compares, interleaved in one run on one synthetic atlas written by the real build
code (tests/fixtures/synthetic_atlas.py):
- a feature block through `AtlasReader.feature_block` vs the same five SQL strings on the same cursor;
- a feature-list page (count + page) through `AtlasReader.list_features` vs the same two SQL strings;
and prints medians and the ratio reader / hand-written (1.0 = no overhead).

    python benchmarks/reader_bench.py [--features 16384] [--repeats 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `tests.fixtures` (not installed) imports from the checkout

from pipelines.atlas.reader import AtlasReader, FeatureFilter  # noqa: E402
from tests.fixtures.synthetic_atlas import write_synthetic_atlas  # noqa: E402

BLOCK = 512
PER_FEATURE = "WHERE feature_id BETWEEN ? AND ? ORDER BY feature_id"
HAND_WRITTEN_BLOCK = (
    "SELECT * FROM features WHERE id BETWEEN ? AND ? ORDER BY id",
    f"SELECT * FROM examples {PER_FEATURE}, kind DESC, rank",
    f"SELECT * FROM feature_languages {PER_FEATURE}, act_share DESC",
    f"SELECT * FROM feature_categories {PER_FEATURE}, act_share DESC",
    f"SELECT * FROM feature_language_effects {PER_FEATURE}, effect DESC",
)
HAND_WRITTEN_COUNT = (
    "SELECT count(*) FROM features WHERE density > 0 AND top_language = ? AND density >= ? "
    "AND density <= ? AND label_score >= ? AND top_language_selectivity >= ?"
)
HAND_WRITTEN_LIST = (
    "SELECT id, density, max_act, label, label_score, top_language, top_language_selectivity, top_category, "
    "top_category_selectivity FROM features WHERE density > 0 AND top_language = ? AND density >= ? "
    "AND density <= ? AND label_score >= ? AND top_language_selectivity >= ? "
    "ORDER BY density DESC, id LIMIT ? OFFSET ?"
)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        atlas = write_synthetic_atlas(Path(tmp) / "atlas.duckdb", n_features=args.features, n_clips=120)
        with AtlasReader.open(atlas) as reader:
            cursor = reader.cursor()
            n_blocks = args.features // BLOCK

            def by_reader(i: int) -> None:
                lo = (i % n_blocks) * BLOCK
                reader.feature_block(lo, lo + BLOCK - 1)

            def by_hand(i: int) -> None:
                lo = (i % n_blocks) * BLOCK
                for sql in HAND_WRITTEN_BLOCK:
                    cursor.sql(sql, params=[lo, lo + BLOCK - 1]).to_arrow_table()

            spec = FeatureFilter(language="es", sort="density_desc")
            list_params = ["es", 0.0, 1.0, 0.0, 0.0, spec.limit, spec.offset]

            def hand_list() -> None:
                cursor.execute(HAND_WRITTEN_COUNT, list_params[:5]).fetchall()
                cursor.execute(HAND_WRITTEN_LIST, list_params).fetchall()

            results: dict[str, list[float]] = {
                k: [] for k in ("block_reader", "block_sql", "list_reader", "list_sql")
            }
            for i in range(args.repeats):  # interleaved, so machine load hits both sides alike
                results["block_reader"].append(median_ms(lambda: by_reader(i), 1))
                results["block_sql"].append(median_ms(lambda: by_hand(i), 1))
                results["list_reader"].append(median_ms(lambda: reader.list_features(spec), 1))
                results["list_sql"].append(median_ms(lambda: hand_list(), 1))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"atlas: {args.features} features, block {BLOCK}, {args.repeats} interleaved repeats")
    print(
        f"feature block   reader {med['block_reader']:.2f} ms  hand-written SQL {med['block_sql']:.2f} ms"
        f"  ratio {med['block_reader'] / med['block_sql']:.2f}"
    )
    print(
        f"feature list    reader {med['list_reader']:.2f} ms  hand-written SQL {med['list_sql']:.2f} ms"
        f"  ratio {med['list_reader'] / med['list_sql']:.2f}"
    )


if __name__ == "__main__":
    main()
