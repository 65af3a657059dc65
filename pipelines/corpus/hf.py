"""Add examples of a Hugging Face audio dataset (LibriSpeech, FLEURS, Common Voice, ...) to a corpus.

Needs the optional `datasets` package (`pip install -e '.[hf]'`) and a network. The audio column is read
undecoded (`Audio(decode=False)`: the file's bytes) and decoded by our own FFmpeg path, so no extra audio
backend is needed and every dataset's format is handled alike. Dataset files are anyone's uploads, so they
are decoded as `corpus add-folder` decodes a user's files: in a worker process (`pipelines.audio_sandbox`,
bytes through a temporary file), where a file that crashes or hangs the decoder is skipped with its reason.
Each dataset names its columns differently; `layout_for` maps them onto transcript, language and speaker.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from pipelines.audio_sandbox import decode_file_isolated
from pipelines.corpus.candidate import ADDED_KEY, Candidate, language_code, slug
from pipelines.corpus.folder import DECODE_TIMEOUT_S, MAX_SECONDS
from pipelines.corpus.manifest import SPEECH
from pipelines.corpus.store import append
from pipelines.corpus.summary import CorpusSummary, summarize
from pipelines.errors import AtlasError
from pipelines.paths import DEFAULT_CORPUS, corpus_dir

INSTALL_HINT = "pip install -e '.[hf]'"


@dataclass(frozen=True)
class DatasetLayout:
    """Which columns of a dataset hold what."""

    audio: str
    text: str
    """Transcript column ('' when the dataset has none)."""
    language_column: str | None = None
    """Column with each example's locale (Common Voice `locale`)."""
    language: str | None = None
    """Fixed language (LibriSpeech is English); None: from `language_column`, else from the config name."""
    speaker: str | None = None
    key: str | None = None
    """Column with a stable example id (the row number otherwise)."""
    licence: str = ""


LAYOUTS = {
    "librispeech": DatasetLayout(
        "audio", "text", language="en", speaker="speaker_id", key="id", licence="CC-BY-4.0"
    ),
    "fleurs": DatasetLayout("audio", "transcription", key="id", licence="CC-BY-4.0"),
    "common_voice": DatasetLayout(
        "audio", "sentence", language_column="locale", speaker="client_id", key="path", licence="CC0-1.0"
    ),
}
"""Known datasets, matched by a substring of the dataset name (`openslr/librispeech_asr`, `google/fleurs`)."""

TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_transcription")
LANGUAGE_COLUMNS = ("locale", "language", "lang")


@dataclass(frozen=True)
class Example:
    """One dataset row, mapped."""

    audio: bytes | str
    """The audio file's bytes, or its local path."""
    transcript: str
    language: str
    speaker: str
    key: str


def layout_for(dataset: str, columns: Iterable[str], audio_column: str | None = None) -> DatasetLayout:
    """The known layout of `dataset`, or one guessed from its column names."""
    name = dataset.lower().replace("-", "_")
    for known, layout in LAYOUTS.items():
        if known in name:
            return layout
    names = list(columns)
    audio = audio_column or ("audio" if "audio" in names else None)
    if audio is None:
        raise AtlasError(f"{dataset} has no audio column (columns: {', '.join(names)})")
    return DatasetLayout(
        audio=audio,
        text=next((c for c in TEXT_COLUMNS if c in names), ""),
        language_column=next((c for c in LANGUAGE_COLUMNS if c in names), None),
    )


def map_example(example: Mapping[str, Any], layout: DatasetLayout, config: str | None, index: int) -> Example:
    """Audio, transcript, language, speaker and id of one row (its audio undecoded: `{"bytes", "path"}`)."""
    audio = example.get(layout.audio)
    if isinstance(audio, Mapping):
        audio = audio.get("bytes") or audio.get("path")
    if not isinstance(audio, (bytes, str)) or not audio:
        raise AtlasError(f"row {index} has no audio bytes or path in column {layout.audio!r}")
    language = layout.language or ""
    if not language and layout.language_column and example.get(layout.language_column):
        language = language_code(str(example[layout.language_column]))
    if not language and config and config != "all":
        language = language_code(config)
    speaker = example.get(layout.speaker) if layout.speaker else None
    key = example.get(layout.key) if layout.key else None
    return Example(
        audio=audio,
        transcript=" ".join(str(example.get(layout.text) or "").split()) if layout.text else "",
        language=language,
        speaker="" if speaker is None else str(speaker),
        key=str(index if key is None else key).rsplit("/", 1)[-1],
    )


def add_hf(
    dataset: str,
    config: str | None = None,
    split: str = "test",
    limit: int = 200,
    corpus: str = DEFAULT_CORPUS,
    *,
    data_dir: str | None = None,
    streaming: bool = True,
    workers: int | None = None,
) -> CorpusSummary:
    """Add the first `limit` examples of `dataset` (config, split) to the corpus `corpus`.

    `data_dir` points a packaged loader at local files (`audiofolder` with a `metadata.csv`), which needs
    no network.
    """
    if limit <= 0:
        raise AtlasError(f"--limit must be positive, got {limit}")
    try:
        import datasets
    except ImportError:
        raise AtlasError(f"Hugging Face `datasets` is not installed: {INSTALL_HINT}") from None
    start = time.perf_counter()
    where = f"{dataset}{'/' + config if config else ''} ({split}{', ' + data_dir if data_dir else ''})"
    try:
        rows = datasets.load_dataset(dataset, config, data_dir=data_dir, split=split, streaming=streaming)
        features = rows.features or {}
        audio_column = next((n for n, f in features.items() if isinstance(f, datasets.Audio)), None)
        layout = layout_for(dataset, features, audio_column)
        rows = rows.cast_column(layout.audio, datasets.Audio(decode=False))
        examples = [map_example(row, layout, config, i) for i, row in zip(range(limit), rows)]
    except AtlasError:
        raise
    except Exception as exc:  # the hub client raises many kinds: offline, gated, unknown config or split
        raise AtlasError(f"cannot load {where}: {_explain(exc)}") from exc
    source = slug("hf", dataset.rsplit("/", 1)[-1], config or "", split)
    candidates = [
        Candidate(
            id=slug(source, example.key),
            load=partial(decode_isolated, example.audio, slug(source, example.key)),
            seconds=0.0,
            category=SPEECH,
            source=source,
            licence=layout.licence,
            language=example.language,
            transcript=example.transcript,
            speaker=slug(example.speaker) if example.speaker else "",
            extra={ADDED_KEY: "hf", "origin": f"{where}:{example.key}", "dataset": dataset},
        )
        for example in examples
    ]
    target = corpus_dir(corpus)
    clips, added, skipped = append(target, corpus, candidates, workers=workers)
    summary = summarize(corpus, target, clips)
    summary.added, summary.skipped = len(added), skipped
    summary.timings = {"total": time.perf_counter() - start}
    return summary


def decode_isolated(audio: bytes | str, name: str) -> np.ndarray:
    """A row's audio (its bytes, or a local path) decoded in a worker process; bytes are written to a
    temporary file called `name` first (the decoder's messages start with it)."""
    if isinstance(audio, str):
        return decode_file_isolated(audio, max_seconds=MAX_SECONDS, timeout_s=DECODE_TIMEOUT_S)
    with tempfile.TemporaryDirectory(prefix="whisper-atlas-hf-") as folder:
        path = Path(folder) / name
        path.write_bytes(audio)
        return decode_file_isolated(path, max_seconds=MAX_SECONDS, timeout_s=DECODE_TIMEOUT_S)


def _explain(exc: BaseException) -> str:
    """One line saying why loading failed and what to do."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ImportError):  # datasets >= 4 needs torchcodec to encode local audio files
            return f"{cause} (pip install the missing package and retry)"
        cause = cause.__cause__
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return (
        f"{reason} (check the name, config and split; the hub needs a network, and gated sets such as "
        "Common Voice need `huggingface-cli login` and their terms accepted)"
    )
