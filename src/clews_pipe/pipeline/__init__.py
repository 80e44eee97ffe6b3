"""Catalogs, audio decoding and the Dask extraction job."""
