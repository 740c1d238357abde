"""`python -m movierec serve`: load the outputs, then answer with uvicorn until stopped."""

from __future__ import annotations

import sys
import time

from movierec.serve.service import Service


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def serve(root: str, host: str, port: int, poll_s: float) -> None:
    import uvicorn

    from movierec.serve.app import create_app

    start = time.perf_counter()
    service = Service(root, poll_s=poll_s, log=_log)
    info = service.current.info
    _log(f"serve: {info.model}, {info.counts['users']:,} users x {info.counts['movies']:,} "
         f"movies, loaded in {time.perf_counter() - start:.1f} s; http://{host}:{port}/ "
         f"(API docs at /docs)")
    service.start()
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning",
                    access_log=False)
    finally:
        service.stop()
