"""The studio's web server: the app, its access rules, and `serve` (what the command runs).

Access: a random token (`secrets.token_urlsafe`) printed in the URL, as Jupyter does, is required on
every request, as the `token` query parameter, the `X-Studio-Token` header or the cookie the page
sets on first load (HttpOnly, SameSite=Strict). The server binds to 127.0.0.1 unless told
otherwise and writes no access log (it would carry the token). Request bodies are limited in size.
Errors: a bad request gets a 4xx JSON `{"detail": reason}`; a bug gets a one-line 500 and one log
line, the traceback only with --debug.
"""

from __future__ import annotations

import logging
import secrets
import socket
import sys
import traceback

from samadapt.errors import UserError
from samadapt.studio.config import TOKEN_COOKIE, TOKEN_HEADER

log = logging.getLogger("samadapt.studio")


def create_app(studio, token: str):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from samadapt.studio.routes import add_routes
    from samadapt.studio.store import Conflict

    app = FastAPI(title="samadapt studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio, app.state.token = studio, token

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        given = (request.query_params.get("token") or request.headers.get(TOKEN_HEADER)
                 or request.cookies.get(TOKEN_COOKIE) or "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "a valid access token is required (open the URL the server printed)"},
                                status_code=403)
        try:
            return await call_next(request)
        except Exception as exc:  # a bug: never a traceback in the log unless --debug
            return _internal_error(exc, studio.debug)

    @app.exception_handler(UserError)
    async def user_error(request, exc: UserError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(LookupError)
    async def not_found(request, exc: LookupError):
        return JSONResponse({"detail": str(exc.args[0]) if exc.args else "not found"}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(request, exc: Conflict):
        return JSONResponse({"detail": str(exc), "version": exc.current}, status_code=409)

    add_routes(app)
    return app


def _internal_error(exc: Exception, debug: bool):
    from fastapi.responses import JSONResponse

    if debug:
        traceback.print_exception(exc)
    else:
        log.error("internal error: %s: %s (rerun with --debug for the traceback)", type(exc).__name__, exc)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str, token: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def serve(studio, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM (then KeyboardInterrupt: the CLI says so and exits with 130)."""
    import uvicorn

    token = secrets.token_urlsafe(24)
    sock = bind(host, port)
    app = create_app(studio, token)
    logging.basicConfig(level=logging.WARNING, format="samadapt studio: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1"):
        from samadapt.errors import warn

        warn(f"--host {host}: the studio is reachable from other machines; anyone with the token can read and "
             "change the labels in the folder")
    unreadable = sum(c.error is not None for c in studio.cases)
    print(f"samadapt studio: {len(studio.cases)} cases in {studio.root}"
          + (f" ({unreadable} unreadable, listed with their error)" if unreadable else ""), flush=True)
    print(f"samadapt studio: open {url_of(sock, host, token)}", flush=True)
    print("samadapt studio: Ctrl-C stops the server", flush=True)
    config = uvicorn.Config(app, log_level="debug" if studio.debug else "warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    studio.warm_up()
    interrupted = False
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it stopped on
        interrupted = True
    finally:
        sock.close()
        sys.stdout.flush()
    if interrupted or server.should_exit:
        print("samadapt studio: stopped; the edits are saved in", studio.state_dir, file=sys.stderr, flush=True)
        raise KeyboardInterrupt  # exit code 130, as for every command interrupted
