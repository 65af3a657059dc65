"""Exports of a run for other tools: the SAELens checkpoint, a Neuronpedia-style dump, Parquet tables."""
