"""Top-n lists and how good they are.

``topn`` turns the scorer's scores into each user's top-n unseen movies; ``metrics`` computes
precision, recall, NDCG and MAP of such lists against held-out movies, and the global-order
baselines' lists; ``protocol`` says which users are ranked and against which candidates
(Microsoft Recommenders' full-catalogue protocol).

Imports: ``movierec.core``, ``movierec.data`` and ``movierec.nets``.
"""
