"""Where extraction's encoder and the analysis's transcription run: this process (the default) or a Ray
cluster (`cluster.py` connects; `ray_extract.py`, `ray_transcribe.py` distribute the work)."""
