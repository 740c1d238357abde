"""Helpers and fixtures shared by the test modules (imported as ``support.*``)."""
