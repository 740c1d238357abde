"""Answering queries from a trained pipeline: one user's recommendations and one movie's
neighbours (``query``, for the command line), and the HTTP service built on them: one
consistent set of loaded outputs (``snapshot``), what dvc.lock says about them (``lock``), their
replacement after a new run (``service``), the routes and the page (``app``, ``page.html``) and
the server (``run``).

Imports: ``movierec.core``, ``movierec.data``, ``movierec.nets`` and ``movierec.ranking``;
FastAPI and uvicorn for the service.
"""
