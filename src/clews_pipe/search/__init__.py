"""Search: a FAISS index over every candidate segment (``segment_index``: build from embeddings,
search by R_min with exact re-ranking, ``clews-pipe index build`` / ``search``) and the index kinds
it can use (``ann``: flat, ivf-flat, ivf-pq, hnsw), and the recall of an approximate index against
exact search with the search setting tuned to a target (``recall``).
"""
