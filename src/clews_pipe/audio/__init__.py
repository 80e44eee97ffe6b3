"""Audio in: decoding any container PyAV reads to mono float32 at 16 kHz (``decode``: PyAV +
soxr, damaged packets counted, NaN/inf cleaned) and the file extensions the catalogs and ``embed``
look for (``formats``). Used by extraction, the demo corpora and ``clews-pipe embed``.
"""
