"""`whisper-atlas transcribe FILE`: transcript and language probabilities of any audio FFmpeg decodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.constants import SAMPLE_RATE, WINDOW_SECONDS

TOP_LANGUAGES = 5


def register(app: typer.Typer) -> None:
    @app.command("transcribe")
    def transcribe_command(
        file: Annotated[
            Path, typer.Argument(help="Audio file (WAV, FLAC, MP3, Ogg, WebM, ...); first 30 s.")
        ],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
        model: Annotated[
            str, typer.Option(help="bundled:whisper-base, a transformers folder, or a hub id.")
        ] = "bundled:whisper-base",
        language: Annotated[
            Optional[str], typer.Option(help="Force a language code (en, es, ...); default: detect.")
        ] = None,
        words: Annotated[bool, typer.Option(help="Include word timestamps.")] = False,
    ) -> None:
        """Transcribe the first 30 s of FILE with Whisper and show the most probable languages."""
        from dataclasses import asdict

        from transformers.utils import logging as hf_logging

        from pipelines.audio import decode_audio
        from pipelines.model.loader import load_whisper
        from pipelines.model.transcribe import check_language, transcribe

        hf_logging.set_verbosity_error()
        if language is not None:
            check_language(language)
        audio = decode_audio(file, max_seconds=WINDOW_SECONDS)
        bundle = load_whisper(model)
        result = transcribe(bundle, audio, language=language, word_timestamps=words)
        top = dict(list(result.language_probs.items())[:TOP_LANGUAGES])
        if as_json:
            payload = asdict(result) | {"language_probs": top, "seconds": round(len(audio) / SAMPLE_RATE, 3)}
            typer.echo(json.dumps(payload, ensure_ascii=False, indent=1))
            return
        typer.echo(result.text)
        typer.echo("languages: " + ", ".join(f"{code} {p:.3f}" for code, p in top.items()))
        if result.repetitive:
            typer.echo("warning: the transcript looks like a repetition loop or is empty (likely no speech)")
        for word in result.words:
            typer.echo(f"{word.start:6.2f} {word.end:6.2f} {word.word.strip()}")
