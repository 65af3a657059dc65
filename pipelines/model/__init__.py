"""Whisper for the atlas: loading (`loader`, `bundled`, `ct2`), the encoder's frames at any layer and their
edits (`encoder`), decoding from encoder states (`transcribe`), and packed windows (`packing`)."""
