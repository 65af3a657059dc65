"""Property-based testing of the POST endpoints (multipart uploads) with schemathesis, in-process (ASGI).

`/api/v1/analyze` and `/api/v1/steer` get schema-generated multipart bodies, valid and invalid: random bytes
as the file (decoded for real, in worker processes) and random text as the steering spec, on the tiny
random Whisper. The server must never answer 5xx and its answers must match the documented statuses and
content types. Schema-valid bodies are mostly refused (random bytes are no audio), so
`positive_data_acceptance` is excluded, as for the GET operations (tests/backend/test_schemathesis.py).
Random text is rarely a spec, so a second test sends real audio with generated specs: JSON values of any
shape under the spec's own keys, each answered 200 or 422.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.services.inference import InferenceSettings
from tests.backend.test_live_api import CLIP
from tests.fixtures.live_server import live_app
from tests.fixtures.schemathesis_checks import check_operation

EXAMPLES = 25
"""Per operation and generation mode; derandomized, so CI runs what ran here."""

OPERATIONS = ("POST /api/v1/analyze", "POST /api/v1/steer")


@pytest.fixture
def api(data_root: Path):
    app = live_app(data_root, settings=InferenceSettings(max_new_tokens=4))
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", app).include(tag="live")


def test_every_live_operation_is_covered(api) -> None:
    assert {result.ok().label for result in api.get_all_operations()} == set(OPERATIONS)


@pytest.mark.parametrize(
    ("label", "mode"),
    [(label, mode) for label in OPERATIONS for mode in schemathesis.GenerationMode],
    ids=str,
)
def test_no_server_errors_and_documented_answers(api, label: str, mode: schemathesis.GenerationMode) -> None:
    (operation,) = [r.ok() for r in api.get_all_operations() if r.ok().label == label]
    check_operation(operation, mode, EXAMPLES)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
LANGUAGE = st.sampled_from(["en", "es", "fr", "xx"])
VALUES = {
    "mode": st.sampled_from(["add", "clamp"]),
    "toward_language": LANGUAGE,
    "source_language": LANGUAGE,
    "method": st.sampled_from(["sae", "dom"]),
    "scale": st.sampled_from(["frame_norm", "feature_act"]),
    "strength": st.floats(-3, 3),
    "n_features": st.integers(1, 12),
}
"""Plausible values of each spec key (the tiny SAE has 96 features); each key may also get any JSON."""
FEATURE = st.fixed_dictionaries(
    {"id": st.integers(0, 95), "strength": st.floats(-3, 3)}
) | st.fixed_dictionaries({"id": JSON, "strength": JSON})
SPECS = (
    st.fixed_dictionaries(
        {}, optional={"features": st.lists(FEATURE, max_size=3), **{k: v | JSON for k, v in VALUES.items()}}
    )
    | JSON
)


def test_generated_specs_with_real_audio_get_200_or_422(data_root: Path) -> None:
    with TestClient(live_app(data_root, settings=InferenceSettings(max_new_tokens=4))) as client:

        @given(spec=SPECS)
        @settings(max_examples=60, derandomize=True, deadline=None, database=None)
        def check(spec: object) -> None:
            text = json.dumps(spec)  # NaN and infinities as JSON's extensions, as a sloppy client sends them
            r = client.post("/api/v1/steer", files={"file": ("a.wav", CLIP)}, data={"spec": text})
            assert r.status_code in (200, 422), (text, r.status_code, r.text[:300])

        check()
