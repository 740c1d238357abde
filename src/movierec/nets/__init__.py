"""The network: the tutorial's residual recommender and its two branches alone.

``spec`` holds the one description of the architecture (variant, sizes, dropout, objective,
training mean), saved with the model. Every implementation is built from it: the Keras model
(``keras_model``), the hand-written forward and backward pass that training runs (``fused``),
and the exact, fast scorer for every (user, movie) pair (``scoring``).

Imports: ``movierec.core`` only.
"""
