"""The analysis pass: per-feature statistics, examples, transcripts, language effects and labels.

Entry point: `pipelines.analysis.analyze.analyze`; its output format: `pipelines.analysis.result`.
(Nothing is imported here, so reading a saved analysis does not load torch models.)
"""
