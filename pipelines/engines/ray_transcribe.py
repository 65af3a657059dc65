"""The analysis's transcription and forced alignment on a pool of Ray actors (`analyze --engine ray`).

On a decodable run `analyze` runs no encoder: its heaviest step is `describe_clips`' transcription of each
window (CTranslate2's decoding and alignment: 148 of the 194 s of the default run's analysis). The driver
still walks the windows, draws the mels, batches windows by language and adds up the language effects
exactly as the local engine does (the same sums in the same order); each batch to transcribe (a
`TranscribeJob`: the windows' final encoder states and clips) goes to an idle actor holding its own
`WindowTranscriber`, and the words come back in submission order. So the batches, and the words, are the
local engine's. At most `IN_FLIGHT_PER_ACTOR` jobs per actor wait at once, which bounds the driver's memory.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from pipelines.analysis.clips import Aligner, TranscribeJob, WindowTranscriber, WindowWords
from pipelines.analysis.config import AnalysisConfig
from pipelines.engines.cluster import BundleLoader, RayConfig, actor_resources

IN_FLIGHT_PER_ACTOR = 2
"""Jobs queued per actor: one running, one ready to start as soon as it finishes."""


class RayTranscription:
    """A `pipelines.analysis.clips.BatchTranscribe` on the connected Ray cluster (`cluster.ray_session`)."""

    def __init__(self, load: BundleLoader, cluster: RayConfig, cfg: AnalysisConfig):
        self.load, self.cluster, self.cfg = load, cluster, cfg
        self.batches = 0
        """Batches of windows transcribed on the cluster (for the CLI's summary)."""
        self.actors = 0
        """Actors started."""

    def __call__(self, jobs: Iterable[TranscribeJob]) -> Iterator[WindowWords]:
        import ray
        from ray.util import ActorPool

        shape = actor_resources(self.cluster)
        actor_class = ray.remote(num_cpus=shape.num_cpus, num_gpus=shape.num_gpus)(_Transcriber)
        args = (self.load, self.cfg.aligner, self.cfg.max_new_tokens, self.cfg.transcribe_all)
        actors: list = []
        pool = ActorPool([])
        waiting = 0
        try:
            for job in jobs:
                if len(actors) < shape.size:  # started as work arrives: a short run starts only what it uses
                    actors.append(actor_class.remote(*args))
                    pool.push(actors[-1])
                    self.actors += 1
                pool.submit(lambda actor, j: actor.run.remote(j), job)
                waiting += 1
                self.batches += 1
                if waiting >= IN_FLIGHT_PER_ACTOR * shape.size:
                    waiting -= 1
                    yield pool.get_next()
            while pool.has_next():
                yield pool.get_next()
        finally:
            for actor in actors:
                ray.kill(actor)


class _Transcriber:
    """The actor: Whisper (and its CTranslate2 copy) loaded once, one batch of windows per call."""

    def __init__(self, load: BundleLoader, aligner: Aligner, max_new_tokens: int, transcribe_all: bool):
        self.transcriber = WindowTranscriber(load(), aligner, max_new_tokens, transcribe_all)

    def run(self, job: TranscribeJob) -> WindowWords:
        return self.transcriber.run(job)
