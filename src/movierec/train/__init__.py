"""Fitting the network.

``training`` runs epochs, validation, early stopping, refit and checkpoints (``checkpoint``);
``steps`` is the compiled training step over the hand-written pass, ``rules`` the update rules
(SGD with momentum computed lazily, Adam, L2), ``objectives`` and ``negatives`` the rating and
ranking objectives' examples, ``probes`` the per-epoch NDCG, ``distribute`` where training runs
(tf.distribute), ``live`` and ``progress`` how a stage follows a run, and ``worker`` a
non-chief task of a multi-machine run.

Imports: ``movierec.core``, ``movierec.data``, ``movierec.nets`` and ``movierec.ranking``.
"""
