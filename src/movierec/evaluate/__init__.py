"""The evaluate stage's content: rating metrics (``metrics``), the baselines scored beside the
model (``baselines``), the ranking section (``ranking_report``), the whole report
(``report``), the figures (``plots``) and the offline page template for ``dvc plots show``
(``plots_page``).

Imports: every layer below it (``core``, ``data``, ``nets``, ``ranking``, ``train``).
"""
