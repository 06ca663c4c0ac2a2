"""Developer and CI sessions. Run them from the dev environment: `.venv/bin/nox -s ci`.

Sessions run in the environment nox was started from (`pip install -e ".[dev]"` made it), so CI
installs once and every session sees the same packages.
"""

from __future__ import annotations

import os
import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]

REDIS_PORT = 6379
PY = sys.executable  # the dev environment nox runs from


def _ensure_redis(session: nox.Session) -> None:
    """Start the shared test Redis on 127.0.0.1:6379 if nothing answers there."""
    try:
        session.run("redis-cli", "-p", str(REDIS_PORT), "ping", silent=True, external=True)
    except Exception:  # noqa: BLE001 - nox raises its own failure type
        session.run("redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
                    "--save", "", "--appendonly", "no", external=True)
        session.run("redis-cli", "-p", str(REDIS_PORT), "--raw", "ping", external=True)


def _ensure_postgres(session: nox.Session) -> None:
    """Start a PostgreSQL on 127.0.0.1:5432 if nothing answers there (installing Debian's package if missing)."""
    session.run("bash", ".ci/postgres", external=True)


@nox.session
def lint(session: nox.Session) -> None:
    session.run(PY, "-m", "ruff", "check", "jobkit", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run(PY, "-m", "mypy", "--strict", "jobkit")


@nox.session
def tests(session: nox.Session) -> None:
    """Every test except the slow suites, with Redis required (a missing Redis fails instead of skipping)."""
    _ensure_redis(session)
    _ensure_postgres(session)
    env = {"JOBKIT_REQUIRE_REDIS": "1", "JOBKIT_REQUIRE_POSTGRES": "1"}
    session.run(PY, "-m", "pytest", "-m", "not slow and not cluster", *session.posargs, env=env)


@nox.session
def slow(session: nox.Session) -> None:
    """The slow suites: kill -9 and restart tests, big imports."""
    _ensure_redis(session)
    _ensure_postgres(session)
    session.run(PY, "-m", "pytest", "-m", "slow and not cluster", *session.posargs,
                env={"JOBKIT_REQUIRE_REDIS": "1", "JOBKIT_REQUIRE_POSTGRES": "1"})


@nox.session
def ci(session: nox.Session) -> None:
    """What CI runs: lint, types, every test (slow ones included; the cluster ones have their own session)."""
    lint(session)
    typecheck(session)
    _ensure_redis(session)
    _ensure_postgres(session)
    session.run(PY, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not cluster", *session.posargs,
                env={"JOBKIT_REQUIRE_REDIS": "1", "JOBKIT_REQUIRE_POSTGRES": "1", "CI": os.environ.get("CI", "")})


@nox.session
def redis_eval(session: nox.Session) -> None:
    """The Redis tests again with the scripts on EVALSHA, as Redis 6.2 (or an ACL without FUNCTION) runs them; the
    other sessions load them as a function library."""
    _ensure_redis(session)
    session.run(PY, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow and not cluster", "-k", "redis",
                *session.posargs, env={"JOBKIT_REQUIRE_REDIS": "1", "JOBKIT_TEST_REDIS_FUNCTIONS": "0"})


@nox.session
def cluster(session: nox.Session) -> None:
    """A 3-master Redis Cluster on free loopback ports (own redis-servers, `redis-cli --cluster create`, stopped
    by PID): the whole contract suite on it, then a producer and two worker processes over `redis+cluster://`."""
    session.run(PY, "-m", "pytest", "-p", "no:cacheprovider", "tests/contract", "tests/cluster", *session.posargs,
                env={"JOBKIT_TEST_BACKENDS": "cluster", "JOBKIT_REQUIRE_REDIS": "1"})


@nox.session
def browser(session: nox.Session) -> None:
    """In headless Chromium: open notebooks/quickstart.ipynb in JupyterLab, run it, read the bar at 100 %; then drive
    the /ui dashboard (a live bar, a cancel, hostile markup inert, read-only without actions)."""
    if not os.path.exists("/usr/bin/chromium"):
        session.run("apt-get", "update", "-q", external=True)
        session.run("apt-get", "install", "-y", "-q", "chromium", external=True)
    session.run(PY, "tests/browser/check_quickstart.py")
    session.run(PY, "tests/browser/check_ui.py")
