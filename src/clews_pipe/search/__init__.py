"""Search: a FAISS index over every candidate segment (``segment_index``: build from embeddings,
search by R_min with exact re-ranking, ``clews-pipe index build`` / ``search``) and the index kinds
it can use (``ann``: flat, ivf-flat, ivf-pq, hnsw).
"""
