"""Retrieval maths shared by the loss, validation and evaluation: ``segment_distances``
(normalised squared Euclidean between segments), ``redux`` (a parsed reduction name) and
``reductions`` (min, max, mean, meanmin, minmean, best-r, bpwr-r over a track pair) with the
vectorised ``bpwr_kernel``, ``tiles`` (reduced distances of a query tile against candidate
blocks), ``metrics`` (AP, rank of the first match, NAR per query and their means), and
``protocol_options`` (the published protocol and clews-pipe's, one named choice each).
"""
