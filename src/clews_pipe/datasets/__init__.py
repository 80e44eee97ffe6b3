"""Datasets: what a corpus on disk holds and the corpora clews-pipe makes itself.

``catalogs`` reads Discogs-VI (light split JSONs or the full JSONL), SHS100K and plain folders into
one track table (track id, clique, version, split, title, artist, audio path); ``demo_corpus``
synthesises musical versions in numpy in the Discogs-VI layout for tests and the demo.
"""
