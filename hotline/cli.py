"""The ``hotline`` command: serve | demo | migrate | asterisk-config | prompts build | user add."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys

import asyncpg

from config.settings import ConfigError, Settings, load_settings
from queues.config_models import ROLES


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline", description="12345 hotline telephony integration service")
    parser.add_argument("--config", help="TOML settings file (default: $HOTLINE_CONFIG); environment wins over it")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run against a real Asterisk (AMI + FastAGI) and serve the HTTP API")
    demo = sub.add_parser("demo", help="run the service against the built-in PBX simulator with synthetic callers")
    demo.add_argument("--calls", type=_positive_int, help="stop after this many finished calls and print a JSON summary")
    demo.add_argument("--speed", type=_positive_float, default=20.0, help="simulated seconds per real second (default 20)")
    demo.add_argument("--seed", type=int, default=None, help="random seed for the synthetic callers")
    sub.add_parser("migrate", help="apply the Postgres schema migrations")
    asterisk = sub.add_parser("asterisk-config", help="print the Asterisk 22 dialplan, queues.conf and manager.conf snippets")
    asterisk.add_argument("--no-database", action="store_true",
                          help="from the settings alone, without the queues and seats configured in Postgres")
    prompts = sub.add_parser("prompts", help="IVR prompts").add_subparsers(dest="prompts_command", required=True)
    build = prompts.add_parser("build", help="create the missing prompt sounds from their Chinese text (espeak-ng)")
    build.add_argument("--sounds-dir", default="/var/lib/asterisk/sounds",
                       help="Asterisk's sounds directory (default /var/lib/asterisk/sounds)")
    build.add_argument("--language-dir", help="a language subdirectory of it, e.g. zh")
    build.add_argument("--force", action="store_true", help="also replace sounds that exist (studio recordings too)")
    build.add_argument("--no-database", action="store_true",
                       help="only the shipped flow's prompts, not those of the flows saved in Postgres")
    user = sub.add_parser("user", help="users of the HTTP API").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="add a user; the password comes from $HOTLINE_BOOTSTRAP_PASSWORD or stdin")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--display-name", help="the name shown (default: the login)")
    add.add_argument("login")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    try:
        if args.command == "serve":
            return _serve(settings)
        if args.command == "demo":
            from hotline.demo import run_demo

            return asyncio.run(run_demo(settings, calls=args.calls, speed=args.speed, seed=args.seed))
        if args.command == "migrate":
            from workorders.migrate import migrate

            applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
            print(f"migrations applied: {', '.join(applied) if applied else 'none (schema up to date)'}")
            return 0
        if args.command == "asterisk-config":
            from config.asterisk import render_all

            if not args.no_database:
                # Asterisk must know every queue the service may route to: the settings' and Postgres's.
                from queues.catalog import load_centre

                settings = asyncio.run(load_centre(settings, settings.database_url.get_secret_value()))
            sys.stdout.write(render_all(settings))
            return 0
        if args.command == "user":
            return _user_add(settings, args)
        if args.command == "prompts":
            return _prompts_build(settings, args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ConfigError, ValueError, RuntimeError) as exc:  # MigrationError is a RuntimeError
        logging.getLogger("hotline").error("%s: %s", args.command, exc)
        return 1
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # e.g. a wrong role or password in HOTLINE_DATABASE_URL: one line, not a traceback.
        # asyncpg's messages name the user and the database, never the password.
        logging.getLogger("hotline").error("%s: Postgres: %s: %s", args.command, type(exc).__name__, exc)
        return 1
    return 2


def _user_add(settings: Settings, args: argparse.Namespace) -> int:
    from hotline.auth import add_user_command
    from queues.config_store import ConfigChangeError

    password = os.environ.get("HOTLINE_BOOTSTRAP_PASSWORD")
    if password is None:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    try:
        user = asyncio.run(add_user_command(settings.database_url.get_secret_value(), args.login, args.role,
                                            password, args.display_name))
    except ConfigChangeError as exc:
        logging.getLogger("hotline").error("user add: %s", exc.message)
        return 1
    print(f"user {user.login} ({user.role}) added")
    return 0


def _prompts_build(settings: Settings, args: argparse.Namespace) -> int:
    from ivr.flow import parse_flow
    from ivr.prompts import Prompt, PromptError, ToolMissing, build_prompts
    from ivr.runner import shipped_flow_source
    from ivr.survey import survey_prompt_list

    # one sound per audio name: a live flow's text wins over the shipped flow's, the first live
    # flow (by name) over the others; a flow's own prompt names may repeat across flows
    flows = asyncio.run(_live_flows(settings.database_url.get_secret_value())) if not args.no_database else []
    flows.append(parse_flow(shipped_flow_source()))
    texts: dict[str, str] = {}
    for _, text, audio in [p for f in flows for p in f.prompt_list()] + survey_prompt_list():
        texts.setdefault(audio, text)
    # named by their sound: two flows may give one prompt name to different sounds
    prompts = [Prompt(name=audio, text=text, audio=audio) for audio, text in texts.items()]
    try:
        report = build_prompts(prompts, args.sounds_dir, force=args.force, language_dir=args.language_dir)
    except (PromptError, ToolMissing) as exc:
        logging.getLogger("hotline").error("prompts build: %s", exc)
        return 1
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


async def _live_flows(dsn: str) -> list:
    """The live version of every flow saved in Postgres (a version that no longer parses: skipped)."""
    from ivr.flow import FlowError, parse_flow

    from ivr.store import IvrStore

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        saved = await IvrStore(conn).live_versions()   # a connection answers fetch() like a pool
    finally:
        await conn.close()
    flows = []
    for v in saved:
        try:
            flows.append(parse_flow(v.source))
        except FlowError as exc:
            logging.getLogger("hotline").warning("prompts build: flow %s version %d skipped: %s",
                                                 v.name, v.version, exc.messages[0])
    return flows


def _serve(settings: Settings) -> int:
    from aiohttp import web

    from hotline.app import make_app

    if settings.ami.secret is None:
        raise ConfigError("ami.secret is not set: give HOTLINE_AMI__SECRET or HOTLINE_AMI__SECRET_FILE")
    web.run_app(make_app(settings), host=settings.http.host, port=settings.http.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
