"""Feature store: (frames, 84) float16 CQT features written in parts (zarr or hdf5 backend)
with a track_id (youtube_id) index; readers serve frame windows from memory maps.

Public API: ``create_store`` → :class:`StoreWriter`, ``open_store`` → :class:`FeatureStore`,
``INDEX_COLUMNS``, ``STATUSES``.
"""

from clews_pipe.features.store.index import DONE_STATUSES, INDEX_COLUMNS, STATUSES, WITH_FEATURES
from clews_pipe.features.store.layout import BACKENDS
from clews_pipe.features.store.reader import FeatureStore, open_store
from clews_pipe.features.store.writer import StoreWriter, create_store

__all__ = [
    "BACKENDS", "DONE_STATUSES", "INDEX_COLUMNS", "STATUSES", "WITH_FEATURES",
    "FeatureStore", "StoreWriter", "create_store", "open_store",
]
