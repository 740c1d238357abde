"""The 'Residual Network for Recommendation' tutorial on MovieLens, as a DVC pipeline.

The subpackages are layers; each imports only from the layers below it (import-linter's layers
contract in pyproject.toml, which ``tests/test_architecture.py`` runs):

* ``serve``, ``evaluate``: answering queries from a trained pipeline; the evaluate stage's
  metrics, baselines and figures
* ``train``: fitting the network (the training step, update rules, objectives, epochs,
  checkpoints, tf.distribute)
* ``ranking``: top-n lists from the scorer, and the metrics and protocol that judge them
* ``nets``: the network: its one description, the Keras model, the hand-written training pass
  and the fast scorer, all built from that description
* ``data``: MovieLens releases read, the synthetic twin, indexing and splits
* ``core``: params, paths, errors, column names, atomic files, stage plumbing

The DVC stages (``stages/*.py``) are thin entry points over these; ``python -m movierec`` is the
command line. Importing the package changes nothing in the process (no environment variables,
no stream redirection): the entry points configure logging themselves.
"""

__version__ = "0.1.0"
