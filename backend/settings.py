"""Server settings (pydantic-settings): read from `WHISPER_ATLAS_*` environment variables or given directly.

Following the full-stack FastAPI template's `core/config.py`: one validated settings object, built once and
handed to `create_app`, so tests and the CLI can construct the app with explicit values.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.paths import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_RUN, data_dir

DEMO_COMMAND = "make demo"
"""The one command that builds an atlas from scratch (`whisper-atlas demo` does the same without make)."""


class UploadLimits(BaseModel):
    """What an upload may be (`WHISPER_ATLAS_UPLOADS__MAX_BYTES=...` and so on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    """Largest accepted request body; reading stops as soon as it is passed (413)."""
    max_seconds: float = Field(default=30.0, gt=0)
    """Longer clips are cut to their first `max_seconds` (one Whisper window) and flagged `truncated`."""
    min_seconds: float = Field(default=0.1, ge=0)
    """Shorter clips are refused: Whisper cannot say anything about 5 encoder frames."""
    silence_peak: float = Field(default=1e-4, ge=0)
    """A clip whose peak |sample| stays below this (-80 dBFS) is silent and refused."""
    max_concurrent: int = Field(default=8, ge=1)
    """Uploads being received or decoded at once; more are refused with 503 and Retry-After."""
    decode_timeout_s: float = Field(default=10.0, gt=0)
    """Wall-clock limit on decoding one upload in its worker process (30 s of audio takes well under 1 s)."""
    decode_memory_mb: int = Field(default=512, ge=64)
    """Memory one decode may take in its worker process; a decompression bomb is refused past it."""

    @model_validator(mode="after")
    def _min_below_max(self) -> "UploadLimits":
        if self.min_seconds >= self.max_seconds:
            raise ValueError("upload limits need min_seconds < max_seconds")
        return self


class InferenceSettings(BaseModel):
    """Limits of the live inference worker (`WHISPER_ATLAS_INFERENCE__TIMEOUT_S=...` and so on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_waiting: int = Field(default=4, ge=0)
    """Requests that may wait behind the running one; more are refused with 503."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Longest a request waits for its result (queueing + running) before a 504."""
    retry_after_s: int = Field(default=5, ge=0)
    """Retry-After sent with a 503."""
    max_new_tokens: int = Field(default=96, ge=1)
    """Cap on decoded tokens per transcript, whatever the request asks."""


class Settings(BaseSettings):
    """Where the atlas lives, where the server listens, and how much it may cache."""

    model_config = SettingsConfigDict(
        env_prefix="WHISPER_ATLAS_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    data_dir: Path = Field(default_factory=data_dir)
    """The data root (`WHISPER_ATLAS_DATA` also sets it, as for every pipeline stage)."""
    run: str = Field(default=DEFAULT_RUN, pattern=r"^[A-Za-z0-9_.-]+$")
    """Which run's atlas to serve: `<data_dir>/runs/<run>/atlas.duckdb`."""
    atlas: Path | None = None
    """An explicit atlas file; overrides `data_dir` and `run`."""
    host: str = DEFAULT_HOST
    """Interface to listen on (loopback by default: the server is a local research tool)."""
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    """TCP port to listen on."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (`https://host[:port]`) besides the server's own that may POST (e.g. a proxy's address)."""
    audio_roots: tuple[Path, ...] = ()
    """Extra folders clip audio may be served from; the data root and the atlas's folder always are."""
    cache_mb: int = Field(default=512, ge=0, le=65536)
    """Memory budget for cached feature blocks, rendered pages and images (MiB)."""
    stored_pages: bool = True
    """Serve the feature pages the build stored in the atlas (false: render them here from the atlas's data,
    e.g. for an atlas from elsewhere: stored pages are HTML, see backend/html.py)."""
    prerender_share: float = Field(default=0.5, ge=0, le=1)
    """Share of one core used to render every feature page in the background after an atlas opens, when its
    pages are not stored (0: off)."""
    atlas_check_interval_s: float = Field(default=1.0, ge=0, le=3600)
    """How often to look for a swapped atlas file (seconds; 0 checks on every request)."""
    duckdb_memory_mb: int = Field(default=256, ge=16, le=1_048_576)
    """DuckDB's own buffer budget for the read-only atlas (MiB), on top of `cache_mb`."""
    block_features: int = Field(default=512, ge=1, le=1_000_000)
    """Features loaded from the atlas per query and cached together (rows are sorted by feature id)."""
    examples_shown: int = Field(default=10, ge=1, le=1000)
    """Top examples on a feature page before "more"; quantile samples show one per activation bin."""
    max_audio_window_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest audio window the WAV endpoint cuts (a whole clip is served as its FLAC instead)."""

    uploads: UploadLimits = UploadLimits()
    """Upload size and duration limits of the live endpoints."""
    inference: InferenceSettings = InferenceSettings()
    """Queue, timeout and token limits of the live inference worker."""

    @model_validator(mode="after")
    def _absolute_paths(self) -> "Settings":
        object.__setattr__(self, "data_dir", self.data_dir.expanduser().resolve())
        if self.atlas is not None:
            object.__setattr__(self, "atlas", self.atlas.expanduser().resolve())
        return self

    @property
    def atlas_path(self) -> Path:
        """The atlas file the server reads."""
        return self.atlas or self.data_dir / "runs" / self.run / "atlas.duckdb"

    @property
    def allowed_audio_roots(self) -> tuple[Path, ...]:
        """Folders the audio endpoints may serve from: nothing outside them, whatever the atlas says."""
        return (self.data_dir, self.atlas_path.parent, *(p.expanduser().resolve() for p in self.audio_roots))
