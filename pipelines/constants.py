"""Whisper's fixed audio geometry, defined once for the pipelines and the server.

Whisper (Radford et al. 2022, sec. 2.2) reads 16 kHz mono audio in 30 s windows: an 80-bin log-mel with a
10 ms hop (3000 mel frames), which two convolutions (the second with stride 2) turn into 1500 encoder
frames of 20 ms.
"""

from __future__ import annotations

SAMPLE_RATE = 16000
"""Samples per second of every clip the pipelines and the server handle (mono float32)."""
MEL_HOP_SAMPLES = 160
"""Samples between log-mel frames (Whisper's STFT hop)."""
MEL_FRAME_SECONDS = MEL_HOP_SAMPLES / SAMPLE_RATE
"""Seconds per log-mel frame: 10 ms."""
MEL_PER_FRAME = 2
"""Log-mel frames per encoder frame (the second convolution has stride 2)."""
SAMPLES_PER_FRAME = MEL_HOP_SAMPLES * MEL_PER_FRAME
"""Samples per encoder frame: 320."""
FRAME_SECONDS = SAMPLES_PER_FRAME / SAMPLE_RATE
"""Seconds of audio one encoder frame covers: 20 ms."""
FRAMES_PER_WINDOW = 1500
"""Encoder frames per 30 s window."""
WINDOW_SAMPLES = FRAMES_PER_WINDOW * SAMPLES_PER_FRAME
"""Samples per 30 s window."""
WINDOW_SECONDS = WINDOW_SAMPLES / SAMPLE_RATE
"""Seconds per window: 30.0, the longest audio one encoder pass sees."""
