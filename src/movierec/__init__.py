"""The 'Residual Network for Recommendation' tutorial on MovieLens, as small importable pieces.

Each DVC stage in ``stages/`` is a thin entry point over the functions in this package.
"""

import os

# TensorFlow prints several lines of C++ start-up chatter (oneDNN, CUDA probing) on every import;
# they bury the stage logs. A user who wants them can set TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
