"""``sync-pipelines``: the project's command line (sandbox, demo, migrate, pools).

Dagster's own CLI (``dagster asset materialize``, ``dagster job backfill``, ``dagster dev``)
runs the syncs; this one sets up what those need.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path


def _load_env_file(path: str | None) -> None:
    """Read ``export KEY=value`` lines (as .sandbox/env has them); set variables not yet set."""
    if not path:
        return
    file = Path(path)
    if not file.exists():
        raise SystemExit(
            f"env file {file} not found (run `sync-pipelines sandbox` to create .sandbox/env)"
        )
    for raw in file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value else [""]
        os.environ.setdefault(key.strip(), parts[0] if parts else "")


def cmd_migrate(args: argparse.Namespace) -> int:
    from .lib.db import ROLES, DatabaseConfigError, database_for_role
    from .lib.migrations import MigrationError, migrate, migration_roles

    roles = [args.role] if args.role else [r for r in migration_roles() if r in ROLES]
    status = 0
    for role in roles:
        try:
            db = database_for_role(role, os.environ)
        except DatabaseConfigError as exc:
            print(f"{role}: skipped: {exc}", file=sys.stderr)
            status = status or (2 if args.role else 0)
            continue
        try:
            report = migrate(db, role)
        except MigrationError as exc:
            print(f"{role}: {exc}", file=sys.stderr)
            status = 1
            continue
        finally:
            db.dispose()
        applied = ", ".join(report.applied) or "nothing new"
        print(f"{db.describe()}: {applied} ({len(report.already_applied)} already applied)")
    return status


def cmd_pools(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from .pools import POOL_LIMITS

    # Runs in production at every rollout (deploy/entrypoint.sh): no sandbox import here.
    with DagsterInstance.get() as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
            print(f"pool {pool}: {limit}")
    return 0


def _sigterm_as_interrupt() -> None:
    """SIGTERM (a service manager, `kill`, a closed session) stops the sandbox and the demo the
    same way Ctrl-C does: through their clean-up, never leaving PostgreSQL or Dagster running."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from .sandbox.demo import apply_migrations, prepare_sources, set_pool_limits
    from .sandbox.runner import Sandbox, interrupts_ignored

    _sigterm_as_interrupt()
    sandbox = Sandbox()
    try:
        env = sandbox.start()
        os.environ.update(env)
        apply_migrations(lambda msg: None)
        with DagsterInstance.get() as instance:
            set_pool_limits(instance)
            prepare_sources(env, instance, log=lambda msg: None)
        print("sandbox running:")
        for line in sandbox.describe():
            print(f"  {line}")
        print(
            "point a shell at it with:  source .sandbox/env     (Ctrl-C stops the sandbox)",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping the sandbox")
        return 0
    finally:
        with interrupts_ignored():
            sandbox.stop()


def cmd_tiny_authorize(args: argparse.Namespace) -> int:
    from .lib.db import database_for_role
    from .tiny.client import TinyReauthorizationRequired, TokenManager, settings_from_variables

    code = args.code or sys.stdin.readline().strip()
    if not code:
        print("give the authorization code with --code or on standard input", file=sys.stderr)
        return 2
    db = database_for_role("tiny", os.environ)
    try:
        TokenManager(db, settings_from_variables(os.environ).oauth).authorize(code)
    except TinyReauthorizationRequired as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print(
        "Tiny authorized: the token pair is stored in tiny_oauth_tokens; syncs renew it from now on."
    )
    return 0


def cmd_detran_add_examiner(args: argparse.Namespace) -> int:
    from .detran.cli import add_examiner_from_args

    return add_examiner_from_args(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .sandbox.demo import run_demo

    _sigterm_as_interrupt()
    return run_demo(ui=not args.no_ui, host=args.host, port=args.port, runs=not args.no_runs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sync-pipelines", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env-file", help="read variables from this file first (e.g. .sandbox/env)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "migrate", help="apply pending sql/<role>/ migrations to every configured database"
    )
    p.add_argument(
        "--role", help="only this role (tiny, detran, hubsoft, tabuladormax, whatsapp, control)"
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "pools", help="set the Dagster concurrency pool limits on the instance (DAGSTER_HOME)"
    )
    p.set_defaults(func=cmd_pools)

    p = sub.add_parser(
        "sandbox", help="start the embedded database and every simulator until Ctrl-C"
    )
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser(
        "demo", help="sandbox + migrations + every asset once + summary, then the UI"
    )
    p.add_argument(
        "--no-ui", action="store_true", help="exit after the summary instead of serving the UI"
    )
    p.add_argument(
        "--no-runs",
        action="store_true",
        help="skip materializing: serve the UI on the sandbox as the last demo left it",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000, help="the UI's port (make demo PORT=...)")
    p.set_defaults(func=cmd_demo)

    tiny = sub.add_parser("tiny", help="Tiny ERP helpers").add_subparsers(
        dest="tiny_command", required=True
    )
    p = tiny.add_parser(
        "authorize", help="exchange an OAuth authorization code and store the token pair"
    )
    p.add_argument("--code", help="the authorization code (default: read from standard input)")
    p.set_defaults(func=cmd_tiny_authorize)

    from .detran.cli import add_examiner_parser

    detran = sub.add_parser("detran", help="DETRAN agenda helpers").add_subparsers(
        dest="detran_command", required=True
    )
    p = detran.add_parser(
        "add-examiner", help="add or update an examiner (portal password read from stdin)"
    )
    add_examiner_parser(p)
    p.set_defaults(func=cmd_detran_add_examiner)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    from dagster import BetaWarning, PreviewWarning

    # The project uses a few beta/preview Dagster APIs on purpose (asset owners on sensors,
    # freshness mapping); their notices are for library developers, not for operators.
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    args = build_parser().parse_args(argv)
    _load_env_file(args.env_file)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
