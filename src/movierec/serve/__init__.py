"""Answering queries from a trained pipeline: one user's recommendations and one movie's
neighbours (``query``), for the command line and services.

Imports: ``movierec.core``, ``movierec.data``, ``movierec.nets`` and ``movierec.ranking``.
"""
