"""Reference implementations for the tests: the objectives' per-example losses written with
TensorFlow's own primitives, against which the hand-written training pass is checked."""

import tensorflow as tf

from movierec.core.config import OBJECTIVES


def rating_terms(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Squared errors, one per rating."""
    return tf.square(predictions - targets)


def bce_terms(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy with the scores as logits, one per example."""
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def bpr_terms(positive: tf.Tensor, negative: tf.Tensor) -> tf.Tensor:
    """``-log sigmoid(s_pos - s_neg)`` per triple; ``softplus(-x) = -log sigmoid(x)``."""
    return tf.math.softplus(negative - positive)


def loss_terms(objective: str, scores: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """The per-example loss for a batch of scores.

    For ``bpr`` the batch holds the positives' scores, then the negatives' (2b scores for b
    triples) and ``targets`` is unused; otherwise one score per example against ``targets``
    (centred ratings, or labels 0/1).
    """
    if objective == "rating":
        return rating_terms(scores, targets)
    if objective == "bce":
        return bce_terms(scores, targets)
    if objective == "bpr":
        half = tf.shape(scores)[0] // 2
        return bpr_terms(scores[:half], scores[half:])
    raise ValueError(f"loss_terms: received objective={objective!r} (expected one of "
                     f"{', '.join(OBJECTIVES)})")
