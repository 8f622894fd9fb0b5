"""`barycenter-account`: serve, create-user, set-password, send-mail, db upgrade, cleanup."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import multiprocessing
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from web.settings import ConfigError, Settings

SHUTDOWN_GRACE = 10
"""Seconds a stopping server gives the requests in flight (uvicorn's graceful shutdown);
then they are cancelled, and a worker process still alive after that is killed."""

log = logging.getLogger("barycenter")


def _user_server(settings: Settings, sock: socket.socket | None, host: str, port: int):
    from web.app import create_app

    app = create_app(settings)
    # What start-up made (modules, templates, compiled statements) lives as long as the
    # process: kept out of the collector's full scans, which otherwise paused a busy worker
    # for tens of milliseconds (make bench: GET /account p99 61 → 14 ms).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    return uvicorn.Server(config)


def _admin_server(settings: Settings, host: str, port: int):
    from web.admin.app import create_admin_app

    config = uvicorn.Config(
        create_admin_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    return uvicorn.Server(config)


async def _cleanup_forever(settings: Settings) -> None:
    from web.cleanup import cleanup
    from web.db import connect

    database = connect(settings.database_url, settings.sqlite_busy_timeout_ms)
    while True:
        await asyncio.sleep(settings.cleanup_interval)
        try:
            await asyncio.to_thread(cleanup, database, settings)
        except Exception:  # keep serving; the next run will try again
            log.exception("cleanup failed")


async def _reminders_forever(settings: Settings) -> None:
    """The day-before reminders of pending 2FA requirements (web/reminders.py): at start,
    then every `reminder_interval` seconds. Each goes once, whatever restarts in between."""
    from web.db import connect
    from web.reminders import send_due_reminders

    database = connect(settings.database_url, settings.sqlite_busy_timeout_ms)
    while True:
        try:
            await asyncio.to_thread(send_due_reminders, database)
        except Exception:  # keep serving; the next run will try again
            log.exception("reminders failed")
        await asyncio.sleep(settings.reminder_interval)


async def _send_mail_forever(settings: Settings) -> None:
    """The outbox sender of `serve`: due messages go out in a worker thread, never while a
    request waits. Several processes may run it: claims with leases keep each message once."""
    from web.db import connect
    from web.mailer import deliver

    database = connect(settings.database_url, settings.sqlite_busy_timeout_ms)
    database.info["settings"] = settings
    while True:
        try:
            await asyncio.to_thread(deliver, database, settings)
        except Exception:  # keep serving; the next round will try again
            log.exception("sending mail failed")
        await asyncio.sleep(settings.mail_interval)


async def _serve(
    servers: list[uvicorn.Server],
    sockets: list[socket.socket | None],
    settings: Settings,
    with_cleanup: bool,
    workers: Sequence[BaseProcess] = (),
) -> None:
    # From here a signal that uvicorn does not take (none of its servers serves yet, or none
    # runs here: the parent of the workers without an admin listener) ends the wait.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def stop_serving() -> None:
        for server in servers:
            server.should_exit = True
        loop.call_soon_threadsafe(stop.set)

    global _on_signal
    _on_signal = stop_serving
    try:
        if not _stop_requested:  # else signalled while starting
            await _serve_until_stopped(servers, sockets, settings, with_cleanup, workers, stop)
    finally:
        _on_signal = _already_stopping  # the loop is closing; the process ends next


async def _serve_until_stopped(
    servers: list[uvicorn.Server],
    sockets: list[socket.socket | None],
    settings: Settings,
    with_cleanup: bool,
    workers: Sequence[BaseProcess],
    stop: asyncio.Event,
) -> None:
    tasks = [
        asyncio.create_task(s.serve(sockets=[k] if k else None))
        for s, k in zip(servers, sockets, strict=True)
    ]
    # Cancelled at the end: clean-up, reminders, mail, and the watch over the workers.
    background: list[asyncio.Task[None]] = [asyncio.create_task(_until(stop))]
    if workers:  # the user site's processes: when the last one has ended, so does this one
        background.append(asyncio.create_task(_while_alive(workers)))
    if with_cleanup and settings.cleanup_interval > 0:
        background.append(asyncio.create_task(_cleanup_forever(settings)))
    if with_cleanup and settings.reminder_interval > 0:
        background.append(asyncio.create_task(_reminders_forever(settings)))
    if with_cleanup and settings.mail_interval > 0:
        background.append(asyncio.create_task(_send_mail_forever(settings)))
    tasks.extend(background)
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    # One server stopped (a signal): the others shut down the same graceful way. Cancelling
    # them instead would cut their lifespan short (a traceback in the log).
    for server in servers:
        server.should_exit = True
    for task in background:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _until(event: asyncio.Event) -> None:
    await event.wait()


async def _while_alive(workers: Sequence[BaseProcess]) -> None:
    while any(worker.is_alive() for worker in workers):
        await asyncio.sleep(1)


def _already_stopping() -> None:
    pass


# What SIGTERM and Ctrl-C do when uvicorn's own handlers are not installed. They never raise
# from the handler: an exception raised there lands wherever the main thread happens to be,
# a weakref callback say, where it is printed and ignored instead of ending anything (seen
# in a worker signalled while it was starting). Before serving, a signal is noted, and the
# process ends where serving would start; a second one ends it at once. From the start of
# `_serve`, uvicorn handles both while it serves (a graceful shutdown), then raises the
# signal again for the handler it found, this one, which only asks `_serve` to finish.
_on_signal: Callable[[], None] | None = None
_stop_requested = False


def _stop_quietly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and Ctrl-C end the process with status 0 and no traceback."""
    global _stop_requested
    if _on_signal is not None:
        _on_signal()
    elif _stop_requested:
        raise SystemExit(0)
    else:
        _stop_requested = True


def _quiet_signals() -> None:
    signal.signal(signal.SIGTERM, _stop_quietly)
    signal.signal(signal.SIGINT, _stop_quietly)


def listening_socket(
    host: str, port: int, *, reuse_port: bool, listen: bool = True
) -> socket.socket:
    """A listening TCP socket. With `reuse_port`, every worker binds one of its own
    (SO_REUSEPORT) and the kernel spreads new connections over them; one shared socket let
    whichever worker woke first take most of them (measured: one of two workers idle)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit it; uvloop sets it only on sockets it binds itself, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def _worker(settings: Settings, sock: socket.socket | None, host: str, port: int) -> None:
    _quiet_signals()
    if sock is None:  # SO_REUSEPORT: a socket of this worker's own
        sock = listening_socket(host, port, reuse_port=True)
    server = _user_server(settings, sock, host, port)
    asyncio.run(_serve([server], [sock], settings, with_cleanup=False))


def serve(args: argparse.Namespace) -> None:
    from web.db import upgrade

    _quiet_signals()
    settings = Settings.from_env(port=args.port)
    upgrade(settings.database_url)
    if _stop_requested:  # signalled while migrating
        return
    admin_on = args.admin_port != 0
    print(f"Barycenter Account: user site on {settings.effective_origin}", flush=True)
    print(f"Security notifications: {_mail_destination(settings)}", flush=True)
    if admin_on:
        print(f"Admin API on http://{args.admin_host}:{args.admin_port}/graphql", flush=True)
    if args.workers <= 1:
        servers = [_user_server(settings, None, args.host, args.port)]
        sockets: list[socket.socket | None] = [None]
        if admin_on:
            servers.append(_admin_server(settings, args.admin_host, args.admin_port))
            sockets.append(None)
        asyncio.run(_serve(servers, sockets, settings, with_cleanup=True))
        return
    # N processes, each with its own SO_REUSEPORT socket (where the system has it; else one
    # shared socket); this process serves the admin API.
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    # Bound here first, so that a port in use stops `serve` at once. With SO_REUSEPORT it
    # only holds the port (a socket that does not listen is given no connections).
    held = listening_socket(args.host, args.port, reuse_port=reuse_port, listen=not reuse_port)
    shared = None if reuse_port else held
    if shared is not None:
        shared.set_inheritable(True)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings, shared, args.host, args.port), daemon=True)
        for _ in range(args.workers)
    ]
    try:
        for worker in workers:
            worker.start()
        # This process runs the background jobs (clean-up, reminders, mail), with or without
        # the admin listener, until the workers end or a signal stops it.
        servers = [_admin_server(settings, args.admin_host, args.admin_port)] if admin_on else []
        asyncio.run(
            _serve(servers, [None] * len(servers), settings, with_cleanup=True, workers=workers)
        )
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join(timeout=SHUTDOWN_GRACE + 5)
        for worker in workers:  # still busy past its grace: ended
            if worker.is_alive():
                worker.kill()
                worker.join()
        held.close()


def _mail_destination(settings: Settings) -> str:
    if settings.smtp_url:
        from web.mailer import parse_smtp_url

        return f"sent through {parse_smtp_url(settings.smtp_url)!r}"
    return f"written as .eml files to {settings.mail_folder.resolve()}/"


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("Password: ")


def create_user_command(args: argparse.Namespace) -> int:
    from models.user import user_by_username
    from web.db import connect, upgrade
    from web.errors import Refused
    from web.users import create_user

    settings = Settings.from_env()
    upgrade(settings.database_url)
    database = connect(settings.database_url, settings.sqlite_busy_timeout_ms)
    database.info["settings"] = settings
    password = _read_password(args)
    with database.session() as db:
        if args.exists_ok and user_by_username(db, args.username) is not None:
            print(f"User {args.username} already exists")
            return 0
        try:
            user = create_user(
                db, args.username, password, args.display_name, actor="admin", email=args.email
            )
        except Refused as refusal:
            print(f"error: {refusal.detail}", file=sys.stderr)
            return 1
    print(f"Created user {user.username} ({user.subject})")
    return 0


def set_password_command(args: argparse.Namespace) -> int:
    """Same rules as the account page; prints why a password was refused."""
    from models.user import user_by_username
    from web.db import connect, upgrade
    from web.errors import Refused
    from web.password_change import set_password

    settings = Settings.from_env()
    upgrade(settings.database_url)
    database = connect(settings.database_url, settings.sqlite_busy_timeout_ms)
    database.info["settings"] = settings
    password = _read_password(args)
    with database.session() as db:
        user = user_by_username(db, args.username)
        if user is None:
            print(f"error: User not found: {args.username}", file=sys.stderr)
            return 1
        try:
            set_password(db, user, password)
        except Refused as refusal:
            print(f"error: password refused: {refusal.detail}", file=sys.stderr)
            return 1
    print(f"Password of {user.username} changed; every session of theirs was signed out")
    return 0


def send_mail_command(args: argparse.Namespace) -> int:
    """Every pending notification now (retry delays ignored); exits 0 when all went out."""
    from web.db import connect, upgrade
    from web.mailer import deliver

    settings = Settings.from_env()
    upgrade(settings.database_url)
    database = connect(settings.database_url, settings.sqlite_busy_timeout_ms)
    database.info["settings"] = settings
    outcome = deliver(database, settings, ignore_delays=True)
    print(f"{outcome.sent} sent, {outcome.failed} failed ({_mail_destination(settings)})")
    return 0 if outcome.failed == 0 else 1


def db_command(args: argparse.Namespace) -> int:
    from web.db import upgrade

    upgrade(Settings.from_env().database_url)
    print("Database is up to date")
    return 0


def cleanup_command(args: argparse.Namespace) -> int:
    from web.cleanup import cleanup
    from web.db import connect

    settings = Settings.from_env()
    counts = cleanup(connect(settings.database_url, settings.sqlite_busy_timeout_ms), settings)
    print(", ".join(f"{name}: {n}" for name, n in counts.items()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="barycenter-account", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the user site and the admin API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--admin-host", default="127.0.0.1")
    s.add_argument("--admin-port", type=int, default=9091, help="0 turns the admin listener off")
    s.add_argument("--workers", type=int, default=1)
    c = sub.add_parser("create-user", help="create a user")
    c.add_argument("username")
    c.add_argument("--display-name")
    c.add_argument("--password-stdin", action="store_true")
    c.add_argument("--email", help="where security notifications go")
    c.add_argument("--exists-ok", action="store_true", help="do nothing if the user exists")
    sp = sub.add_parser("set-password", help="set a user's password (same rules as the site)")
    sp.add_argument("username")
    sp.add_argument("--password-stdin", action="store_true")
    sub.add_parser("send-mail", help="deliver every pending notification now, then exit")
    d = sub.add_parser("db", help="database commands")
    d.add_argument("action", choices=["upgrade"])
    sub.add_parser("cleanup", help="delete expired sessions, challenges and old events")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Running upgrade …" only if asked
    args = parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
            return 0
        handlers = {
            "create-user": create_user_command,
            "set-password": set_password_command,
            "send-mail": send_mail_command,
            "db": db_command,
            "cleanup": cleanup_command,
        }
        return handlers[args.command](args)
    except ConfigError as problem:  # a setting that must be fixed before anything runs
        print(f"barycenter-account: configuration error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
