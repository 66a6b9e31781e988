"""Audio processing for Phonoglyph: WAV decoding and encoding, analysis, stem separation, rendering.

The api imports only ``wav`` (numpy) and these names; the DSP modules (scipy) load in the worker.
"""

STEM_NAMES = ("harmonic", "percussive")
