"""Embeddings: the padded segment embeddings of a partition, their formats and their producers.

``npz_format`` is the :class:`~clews_pipe.embeddings.npz_format.Embeddings` record and the
``embeddings.npz`` reader/writer, whose uncompressed members ``npz_rows`` reads by rows on
demand (no rank holds a whole file); ``zarr_format`` the chunked ``embeddings.zarr`` store written in
place by the ranks; ``formats`` the one dispatcher that opens either by its layout;
``from_store`` embeds a split of a feature store with a checkpoint (``evaluate --checkpoint``);
``from_audio`` embeds audio files (``clews-pipe embed``); ``provenance`` records what produced them
(checkpoint, store index and file digests).
"""
