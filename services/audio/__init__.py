"""Audio processing for Phonoglyph: WAV decoding and encoding, analysis, stem separation, rendering."""
