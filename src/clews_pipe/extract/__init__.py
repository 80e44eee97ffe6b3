"""Extraction: ``clews-pipe extract``, decode + CQT once into a feature store, as a Dask job.

``job`` plans the parts of the tracks still to extract and runs them on a Dask cluster (each task
decodes, computes the CQT and writes one part atomically); ``config`` is its typed settings
(YAML + overrides); ``cluster`` starts or joins the Dask cluster (LocalCluster, a scheduler address,
or dask-jobqueue workers through sbatch); ``report`` summarises a run (counts, failures, speed).
"""
