"""Audio decoding (PyAV + soxr) shared by extraction and embedding of audio files."""
