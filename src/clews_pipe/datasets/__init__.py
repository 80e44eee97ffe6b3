"""Dataset catalogs and demo corpora."""
