"""`barycenter-account`: serve, create-user, db upgrade, cleanup."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import multiprocessing
import socket
import sys

import uvicorn

from web.settings import ConfigError, Settings

log = logging.getLogger("barycenter")


def _user_server(settings: Settings, sock: socket.socket | None, host: str, port: int):
    from web.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="on",
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
    )
    return uvicorn.Server(config)


async def _cleanup_forever(settings: Settings) -> None:
    from web.cleanup import cleanup
    from web.db import connect

    database = connect(settings.database_url)
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

    database = connect(settings.database_url)
    while True:
        try:
            await asyncio.to_thread(send_due_reminders, database)
        except Exception:  # keep serving; the next run will try again
            log.exception("reminders failed")
        await asyncio.sleep(settings.reminder_interval)


async def _serve(
    servers: list[uvicorn.Server],
    sockets: list[socket.socket | None],
    settings: Settings,
    with_cleanup: bool,
) -> None:
    tasks = [
        asyncio.create_task(s.serve(sockets=[k] if k else None))
        for s, k in zip(servers, sockets, strict=True)
    ]
    if with_cleanup and settings.cleanup_interval > 0:
        tasks.append(asyncio.create_task(_cleanup_forever(settings)))
    if with_cleanup and settings.reminder_interval > 0:
        tasks.append(asyncio.create_task(_reminders_forever(settings)))
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    for task in pending:
        if task not in done:
            task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _worker(settings: Settings, sock: socket.socket, host: str, port: int) -> None:
    server = _user_server(settings, sock, host, port)
    asyncio.run(_serve([server], [sock], settings, with_cleanup=False))


def serve(args: argparse.Namespace) -> None:
    from web.db import upgrade

    settings = Settings.from_env(port=args.port)
    upgrade(settings.database_url)
    admin_on = args.admin_port != 0
    print(f"Barycenter Account: user site on {settings.effective_origin}", flush=True)
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
    # N processes accept on one shared socket; this process serves the admin API.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it; uvloop sets it only on sockets it binds itself, and
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings, sock, args.host, args.port), daemon=True)
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    try:
        servers = [_admin_server(settings, args.admin_host, args.admin_port)] if admin_on else []
        if servers:
            asyncio.run(_serve(servers, [None], settings, with_cleanup=True))
        else:
            for worker in workers:
                worker.join()
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(timeout=5)


def create_user_command(args: argparse.Namespace) -> int:
    from models.user import user_by_username
    from web.db import connect, upgrade
    from web.errors import Refused
    from web.users import create_user

    settings = Settings.from_env()
    upgrade(settings.database_url)
    database = connect(settings.database_url)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
    with database.session() as db:
        if args.exists_ok and user_by_username(db, args.username) is not None:
            print(f"User {args.username} already exists")
            return 0
        try:
            user = create_user(db, args.username, password, args.display_name, actor="admin")
        except Refused as refusal:
            print(f"error: {refusal.detail}", file=sys.stderr)
            return 1
    print(f"Created user {user.username} ({user.subject})")
    return 0


def db_command(args: argparse.Namespace) -> int:
    from web.db import upgrade

    upgrade(Settings.from_env().database_url)
    print("Database is up to date")
    return 0


def cleanup_command(args: argparse.Namespace) -> int:
    from web.cleanup import cleanup
    from web.db import connect

    settings = Settings.from_env()
    counts = cleanup(connect(settings.database_url), settings)
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
    c.add_argument("--exists-ok", action="store_true", help="do nothing if the user exists")
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
            "db": db_command,
            "cleanup": cleanup_command,
        }
        return handlers[args.command](args)
    except ConfigError as problem:  # a setting that must be fixed before anything runs
        print(f"barycenter-account: configuration error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
