"""Run a server app in a background thread (notebooks, scripts, tests): ``with serve_in_background(app) as s:``."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional


class BackgroundServer:
    """uvicorn serving an app on a loopback port from a daemon thread; ``url`` is its base URL."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 timeout: float = 60.0) -> None:
        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        self.host, self.port = host, port
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, name="persona-vectors-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{port} within {timeout:g} s "
                                   "(is the port taken? pass port=0 for a free one)")
            time.sleep(0.02)
        self.url = f"http://{host}:{port}"

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve_in_background(app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
                        ) -> BackgroundServer:
    """Start ``app`` in a daemon thread and return once it accepts connections (``port=0``: a free port)."""
    return BackgroundServer(app, host=host, port=port, log_level=log_level)
