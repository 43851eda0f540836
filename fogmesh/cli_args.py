"""What every ``fogmesh`` subcommand shares: broker/root/log/json options,
argument types, logging set-up and running until a signal. The subcommands'
parsers live next to their packages (``edge_agent/cli.py``, ``devices/cli.py``...)
and use these, so every command takes a broker the same way."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from fogmesh.topics import DEFAULT_ROOT

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT,
                   help=f"topic root shared by every part of one fabric (default: {DEFAULT_ROOT})")


def broker_url(text: str) -> str:
    """An argparse type: a broker URL without a password in it (a password on
    the command line shows up in ``ps`` and shell history)."""
    from fogmesh.mqtt import BrokerUrl
    try:
        url = BrokerUrl.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if url.password is not None:
        raise argparse.ArgumentTypeError(
            "do not put the password in the URL: set FOGMESH_PASSWORD, or FOGMESH_PASSWORD_FILE, "
            "or add ?password_file=PATH to the URL")
    return text


BROKER_HELP = ("broker URL: mqtt://host:port, or mqtts://user@host:8883?ca=ca.crt with the password in "
               "$FOGMESH_PASSWORD, $FOGMESH_PASSWORD_FILE or ?password_file=PATH; over WebSockets "
               "ws://host:9001 or wss://...")


def broker_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default=DEFAULT_BROKER, type=broker_url,
                   help=f"{BROKER_HELP} (default: {DEFAULT_BROKER})")


def log_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging verbosity (default: INFO)")


def json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")


def brokers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--brokers", default="mosquitto,amqtt", help="comma list (default: mosquitto,amqtt)")


def timeout_pair(text: str) -> tuple[str, float]:
    kind, sep, seconds = text.partition("=")
    try:
        if not sep or float(seconds) <= 0:
            raise ValueError
        return kind, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KIND=SECONDS (e.g. sleep=2), got {text!r}") from None


def option_pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, value


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def wait_for_signal(finished: Any = None) -> None:
    """Block until SIGINT or SIGTERM (or until ``finished(0)`` says the work is over)."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        if finished is not None and finished(0):
            return


def run_until_signal(agent: Any) -> int:
    """Start an agent (waiting for its broker), run it until Ctrl-C, SIGTERM or
    a drain ends it, then stop it cleanly."""
    agent.start(wait_for_broker=True)
    try:
        wait_for_signal(agent.wait)
    finally:
        agent.stop()
    fatal = getattr(agent, "fatal", None)
    if fatal:
        print(f"fogmesh: {fatal}", file=sys.stderr)
        return int(getattr(agent, "fatal_status", 2))
    return 0


def deploy_args(p: argparse.ArgumentParser) -> None:
    """Fleet deployment's options, for ``fogmesh agent`` and ``fogmesh cloud-worker``."""
    d = p.add_argument_group("fleet deployment (fogmesh deploy; topics.md: Deployment)")
    d.add_argument("--trust-key", action="append", default=[], metavar="FILE",
                   help="take deployments signed by this key (the .pub file `fogmesh bundle keygen` wrote, or "
                        "its line); repeat for rotation. Without one the agent takes no deployment")
    d.add_argument("--timestamp-key", action="append", default=[], metavar="FILE",
                   help="also take the fleet's signed timestamp (deploy/timestamp) signed by this key, and "
                        "nothing else it signs: the key of a renewer (`fogmesh deploy renew --every`) on a box "
                        "that is always on; repeatable")
    d.add_argument("--site", default="default", help="the site deployments name it by (deploy --to site:NAME; "
                   "default: default)")
    d.add_argument("--label", action="append", default=[], metavar="L",
                   help="a label deployments can target (deploy --to label:L); repeatable")
    d.add_argument("--max-bundle-mb", type=float, default=100.0, metavar="MB",
                   help="refuse bundles larger than this (default: 100)")


def deploy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`AgentOptions` fields :func:`deploy_args` sets."""
    return {"site": args.site, "labels": tuple(args.label), "trust_keys": tuple(args.trust_key),
            "timestamp_keys": tuple(args.timestamp_key),
            "max_bundle_mb": args.max_bundle_mb}


def amqp_arg(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--amqp URL`` (repeatable: the cluster's nodes), for the agent, cloud workers and doctor."""
    p.add_argument("--amqp", action="append", default=[], metavar="URL", help=help)
