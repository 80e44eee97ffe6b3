"""Feature store: (frames, 84) float16 CQT features written in parts (zarr or hdf5 backend)
with a track_id (youtube_id) index; readers serve frame windows from memory maps.

``layout`` names the files and folders of a store; ``track_table`` is the index (one row per track:
clique, split, status, location); ``writer`` writes parts atomically; ``reader`` opens a store
(index + memory maps, least recently used closed first); ``backends`` picks ``zarr_backend`` or
``hdf5_backend``; ``reconcile`` makes a rerun agree with the disk; ``verify`` checks every part.

Public API: ``create_store`` → :class:`StoreWriter`, ``open_store`` → :class:`FeatureStore`,
``INDEX_COLUMNS``, ``STATUSES``.
"""

from clews_pipe.store.track_table import DONE_STATUSES, INDEX_COLUMNS, STATUSES, WITH_FEATURES
from clews_pipe.store.layout import BACKENDS
from clews_pipe.store.reader import FeatureStore, open_store
from clews_pipe.store.writer import StoreWriter, create_store

__all__ = [
    "BACKENDS", "DONE_STATUSES", "INDEX_COLUMNS", "STATUSES", "WITH_FEATURES",
    "FeatureStore", "StoreWriter", "create_store", "open_store",
]
