"""Property-based API testing with schemathesis over our own OpenAPI description (in-process, ASGI).

Every atlas operation gets schema-generated requests, valid and invalid; the server must never answer 5xx and
its answers must match the documented statuses, content types and response schemas. Schema-valid requests
may still be refused with a 422 when the values contradict each other (an audio window that ends before it
starts, past the clip's end): OpenAPI cannot express those rules, so `positive_data_acceptance` is excluded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis

from backend.app import create_app
from tests.backend.conftest import settings_for
from tests.fixtures.schemathesis_checks import check_operation

EXAMPLES = 30
"""Per operation and generation mode (valid and invalid requests). Derandomized, so CI runs what ran here;
raise it locally (400 passes) to search wider."""


@pytest.fixture
def api(atlas_path: Path):
    """The schema of a fresh app (schemathesis runs its lifespan and shuts it down after each test)."""
    app = create_app(settings_for(atlas_path))
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", app).include(tag="atlas")


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_every_atlas_operation_is_covered(api) -> None:
    assert {op.label for op in operations(api)} == set(OPERATIONS)


OPERATIONS = {
    "GET /api/v1/atlas": False,
    "GET /api/v1/taxonomy": False,
    "GET /api/v1/presets": False,
    "GET /api/v1/features": True,
    "GET /api/v1/features/{feature_id}": True,
    "GET /api/v1/clips/{clip_id}": True,
    "GET /api/v1/clips/{clip_id}/audio": True,
    "GET /api/v1/clips/{clip_id}/spectrogram.png": True,
}
"""Operation -> whether it takes parameters (and so can be sent invalid ones)."""


@pytest.mark.parametrize(
    ("label", "mode"),
    [
        (label, mode)
        for label, has_params in OPERATIONS.items()
        for mode in schemathesis.GenerationMode
        if has_params or mode == schemathesis.GenerationMode.POSITIVE
    ],
    ids=str,
)
def test_no_server_errors_and_documented_answers(api, label: str, mode: schemathesis.GenerationMode) -> None:
    (operation,) = [op for op in operations(api) if op.label == label]
    check_operation(operation, mode, EXAMPLES)
