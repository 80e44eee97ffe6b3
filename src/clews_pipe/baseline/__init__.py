"""A classical, training-free version matcher to set beside a model: chroma cross-recurrence Qmax.

``chroma`` folds the store's CQT into pitch-class frames; ``qmax`` is the method of Serrà, Serra &
Andrzejak (2009) (transposition index, delay embedding, cross-recurrence, Qmax); ``matcher`` runs one
query against every candidate, vectorised; ``shards`` writes the query rows of the ranks; ``job`` is
``clews-pipe baseline``'s per-rank body and its evaluation folder.
"""
