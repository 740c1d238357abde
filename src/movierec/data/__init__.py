"""The data layer: where ratings come from and how they are prepared.

Downloading and verifying MovieLens releases (``download``), reading their files and the user's
own (``readers``, ``ingest``), the offline synthetic twin of MovieLens 20M (``synthetic``), the
canonical tables (``tables``), indexing and the train/test splits (``preprocess``, ``splits``),
and each user's movies as sparse rows (``sparse``).

Imports: ``movierec.core`` only. Nothing here imports TensorFlow.
"""
