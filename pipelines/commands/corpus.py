"""`whisper-atlas corpus ...`: build the default corpus, add your own audio, show what a corpus holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from pipelines.paths import DEFAULT_CORPUS

CorpusOption = Annotated[str, typer.Option(help="Corpus name (folder under data/corpora/).")]
WorkersOption = Annotated[Optional[int], typer.Option(help="Decoding processes (default: cores, at most 4).")]


def build_command(
    corpus: CorpusOption = DEFAULT_CORPUS,
    size: Annotated[
        Literal["small", "default", "large"],
        typer.Option(
            help="small (~80 clips, ~8 min: tests), default (~730 clips, ~56 min), large (everything)."
        ),
    ] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the clip selection.")] = 0,
    workers: WorkersOption = None,
) -> None:
    """Assemble the multilingual corpus from Debian packages (downloaded once, no root needed)."""
    from pipelines.corpus.build import build_corpus

    _show(build_corpus(corpus, size, seed=seed, workers=workers))


def add_folder_command(
    path: Annotated[Path, typer.Argument(help="Folder of audio files (WAV, FLAC, MP3, Ogg, WebM, M4A).")],
    corpus: CorpusOption = DEFAULT_CORPUS,
    manifest: Annotated[
        Optional[Path],
        typer.Option(
            help="CSV with columns path, language, transcript (optional: category, speaker, licence)."
        ),
    ] = None,
    workers: WorkersOption = None,
) -> None:
    """Decode every audio file under PATH into the corpus; unreadable files are listed and skipped."""
    from pipelines.corpus.folder import add_folder

    _show(add_folder(path, corpus, manifest, workers=workers), verb="added")


def add_hf_command(
    dataset: Annotated[str, typer.Argument(help="Hub dataset, e.g. openslr/librispeech_asr, google/fleurs.")],
    config: Annotated[
        Optional[str], typer.Option(help="Dataset config (FLEURS: en_us; Common Voice: en).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to read.")] = "test",
    limit: Annotated[int, typer.Option(help="Examples to add (the first ones of the split).")] = 200,
    corpus: CorpusOption = DEFAULT_CORPUS,
    data_dir: Annotated[
        Optional[str], typer.Option(help="Local files for a packaged loader (audiofolder: offline).")
    ] = None,
    streaming: Annotated[bool, typer.Option(help="Stream instead of downloading the whole split.")] = True,
    workers: WorkersOption = None,
) -> None:
    """Add LibriSpeech, FLEURS, Common Voice or another hub audio dataset (needs the `hf` extra)."""
    from pipelines.corpus.hf import add_hf

    summary = add_hf(
        dataset, config, split, limit, corpus, data_dir=data_dir, streaming=streaming, workers=workers
    )
    _show(summary, verb="added")


def info_command(corpus: CorpusOption = DEFAULT_CORPUS) -> None:
    """Show the clips and minutes per language and category of a corpus."""
    from pipelines.corpus.manifest import MANIFEST_NAME, read_manifest
    from pipelines.corpus.summary import summarize
    from pipelines.errors import missing_stage
    from pipelines.paths import corpus_dir

    folder = corpus_dir(corpus)
    if not (folder / MANIFEST_NAME).is_file():
        raise missing_stage("corpus", folder, f"corpus build --corpus {corpus}")
    _show(summarize(corpus, folder, read_manifest(folder)))


def register(app: typer.Typer) -> None:
    corpus_app = typer.Typer(
        help="Build and inspect audio corpora (data/corpora/<name>/).", no_args_is_help=True
    )
    corpus_app.command("build")(build_command)
    corpus_app.command("add-folder")(add_folder_command)
    corpus_app.command("add-hf")(add_hf_command)
    corpus_app.command("info")(info_command)
    app.add_typer(corpus_app, name="corpus")


def _show(summary, verb: str = "") -> None:
    from rich.console import Console

    from pipelines.corpus.summary import render

    console = Console()
    render(summary, console)
    for reason in summary.skipped:
        console.print(f"  skipped {reason}", markup=False, highlight=False)
    if verb:
        console.print(f"{verb} {summary.added} clips, skipped {len(summary.skipped)}")
