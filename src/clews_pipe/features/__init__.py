"""CQT, feature stores (zarr, hdf5) with their youtube_id index, memmap dataset, augmentations."""
