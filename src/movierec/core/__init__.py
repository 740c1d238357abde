"""What every layer shares: typed params (``config``), the pipeline's paths (``paths``), the
project's errors, column names and the MovieLens release catalogue, atomic file writes
(``files``), and the plumbing of a stage entry point (``stage``: arguments, one-line errors,
stop signals; ``quiet``: the stderr filter for TensorFlow's start-up chatter).

Imports: the standard library and third-party packages only, never another ``movierec``
layer.
"""
