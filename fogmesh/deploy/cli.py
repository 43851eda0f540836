"""``fogmesh bundle`` (keygen, build, sign, verify) and ``fogmesh deploy``
(push, status, rollback, remove, history): their options and runs,
registered into the one ``fogmesh`` parser by :mod:`fogmesh.app.cli`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fogmesh.cli_args import broker_arg, json_arg, root_arg
from fogmesh.deploy.freshness import DEFAULT_TTL_S

DEPLOY_ACTIONS = ("status", "rollback", "remove", "history", "prune", "renew")

BUNDLE_EPILOG = """\
The operator's path:
  fogmesh bundle keygen --out ops.key                       # once; give agents ops.key.pub (--trust-key)
  fogmesh bundle build --project ./plantcare --health plant='{"moisture": 40}' --out plantcare.fogbundle
  fogmesh bundle sign plantcare.fogbundle --key ops.key
  fogmesh deploy plantcare.fogbundle --to site:farm --key ops.key --canaries 1 --soak 60
  fogmesh deploy status
  fogmesh deploy renew --key ops.key                         # within a week of the last push (--timestamp-ttl)
"""


def _say(text: str) -> None:
    print(text, flush=True)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("bundle", help="make, sign and check bundles of task kinds for `fogmesh deploy`",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=BUNDLE_EPILOG,
                       description="A bundle is your package (its kinds registered through the fogmesh.tasks "
                                   "entry points) as a wheel, the wheels of its dependencies, and a signed "
                                   "manifest. Agents install it without pip and without network.")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION")
    bsub.required = True
    k = bsub.add_parser("keygen", help="make an Ed25519 signing key (and FILE.pub for the agents' --trust-key)")
    k.add_argument("--out", required=True, metavar="FILE", help="where the private key goes (mode 0600)")
    b = bsub.add_parser("build", help="build a bundle from wheels (or a project folder)")
    b.add_argument("wheels", nargs="*", metavar="WHEEL|DIR",
                   help="the package's wheel and its dependencies' wheels (a folder: every *.whl in it)")
    b.add_argument("--project", metavar="DIR", help="build the wheels of this project and its dependencies with "
                   "`pip wheel` on this machine (it needs the project's index; the agents never do)")
    b.add_argument("--health", action="append", default=[], metavar="KIND=ARGS",
                   help="the health-check task of a kind: its args as JSON (default: {}); repeatable")
    b.add_argument("--image-kind", action="append", default=[], metavar="NAME=IMAGE[,OPTION...]",
                   help="a kind backed by a container image instead of wheels (repeatable; options service, "
                        "memory=256m, cpus=0.5 as for fogmesh agent --image-kind). IMAGE is pinned by digest in "
                        "the bundle (REPOSITORY@sha256:...; a tag is pulled here and pinned); agents pull it "
                        "from its registry. Needs --name and --version")
    b.add_argument("--name", help="the bundle's name (image kinds; wheels carry their own)")
    b.add_argument("--version", help="the bundle's version (image kinds)")
    b.add_argument("--timeout", type=float, default=30.0, metavar="S", help="image kinds' timeout (default: 30)")
    b.add_argument("--chunk-kb", type=int, default=64, help="chunk size on the wire (default: 64)")
    b.add_argument("--sign", metavar="KEY", help="sign it with this key as well")
    b.add_argument("--out", required=True, metavar="FILE", help="the bundle file to write (*.fogbundle)")
    s = bsub.add_parser("sign", help="add a signature to a bundle")
    s.add_argument("bundle", metavar="FILE")
    s.add_argument("--key", required=True, metavar="KEY", help="the private key (`fogmesh bundle keygen`)")
    v = bsub.add_parser("verify", help="check a bundle's digests and signature as an agent would")
    v.add_argument("bundle", metavar="FILE")
    v.add_argument("--trust-key", action="append", default=[], metavar="PUB", help="a trusted public key; "
                   "repeatable (without one only the digests are checked)")

    d = sub.add_parser("deploy", help="push a bundle to agents over MQTT; status, rollback, remove, history",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=BUNDLE_EPILOG,
                       description="fogmesh deploy BUNDLE --to TARGET --key KEY: put the bundle on the broker "
                                   "(retained chunks) and publish the target's signed desired state; agents that "
                                   "trust the key fetch, verify, install, health-check and switch, and report on "
                                   "{root}/deploy/reported/ID. Also: `deploy status`, `deploy rollback --to T`, "
                                   "`deploy remove KIND --to T`, `deploy history`, `deploy prune` (clear bundles "
                                   "no desired state names and no rollback needs), `deploy renew` (the fleet's "
                                   "signed timestamp, which agents that join later need; --every S to keep "
                                   "renewing it). Before it publishes anything it checks the bundle's signature "
                                   "and key against the keys the agents trust, and that the target names an "
                                   "agent. Exit: 0 all succeeded, 1 a failure or rollback, 2 refused before "
                                   "publishing anything, or bad usage.")
    d.add_argument("what", nargs="+", metavar="BUNDLE | status | rollback | remove KIND | history | prune | renew")
    d.add_argument("--to", metavar="TARGET", help="agent:ID, site:NAME, label:L or all")
    d.add_argument("--key", metavar="KEY", help="the signing key (needed to push, roll back, remove or renew; "
                   "for renew it may be a timestamp key the agents take with --timestamp-key)")
    d.add_argument("--trust-key", action="append", default=[], metavar="PUB",
                   help="a key the agents trust (their --trust-key); repeatable. The bundle's signature and --key "
                        "must be one of them (default: the public half of --key alone)")
    d.add_argument("--timestamp-key", action="append", default=[], metavar="PUB",
                   help="a key the agents trust for the timestamp only (their --timestamp-key): the timestamps "
                        "it signed are built on; repeatable")
    d.add_argument("--wait-for-agents", action="store_true",
                   help="publish even if no agent seen answers to --to (for agents that start later)")
    d.add_argument("--timestamp-ttl", type=float, default=DEFAULT_TTL_S, metavar="S",
                   help=f"how long the fleet's signed timestamp published with this push (or renew) holds: "
                        f"agents that join later take desired states only while it does (default: "
                        f"{DEFAULT_TTL_S:.0f}, a week)")
    d.add_argument("--every", type=float, metavar="S",
                   help="renew: keep running and renew the timestamp every S seconds (well under --timestamp-ttl)")
    d.add_argument("--canaries", type=int, default=0, metavar="N", help="first deploy to N agents of the target "
                   "and roll them back if they fail (default: 0, all at once)")
    d.add_argument("--soak", type=float, default=30.0, metavar="S",
                   help="seconds the canaries must run it before the rest get it (default: 30)")
    d.add_argument("--max-failures", type=float, default=0.0, metavar="P",
                   help="roll back when at least P%% of the canaries fail (default: 0, any failure)")
    d.add_argument("--deadline", type=float, default=300.0, metavar="S",
                   help="a canary that has not applied it within S seconds counts as failed (default: 300)")
    d.add_argument("--no-wait", action="store_true", help="publish and leave; `deploy status` follows it")
    d.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="how long to follow the fleet after the push (default: 600)")
    broker_arg(d)
    root_arg(d)
    json_arg(d)


def run_bundle(args: argparse.Namespace) -> int:
    from fogmesh.deploy.bundle_file import Bundle, build_bundle
    from fogmesh.deploy.probe import probe_kinds
    from fogmesh.deploy.signing import PublicKey, SigningKey, TrustStore
    if args.bundle_command == "keygen":
        pub = SigningKey.generate().save(args.out)
        _say(f"wrote {args.out} (keep it secret) and {pub}: start agents with --trust-key {pub}")
        return 0
    if args.bundle_command == "build":
        health = {}
        for item in args.health:
            kind, sep, raw = item.partition("=")
            try:
                health[kind] = json.loads(raw) if sep else {}
            except ValueError as exc:
                print(f"fogmesh bundle build: --health {item}: not JSON ({exc})", file=sys.stderr)
                return 2
        if args.image_kind:
            bundle = _image_bundle(args, health)
        else:
            with tempfile.TemporaryDirectory(prefix="fogmesh-wheels-") as tmp:
                wheels = _wheels(args.wheels, args.project, Path(tmp))
                bundle = build_bundle(wheels, health=health, probe=probe_kinds, chunk_size=args.chunk_kb * 1024)
        if args.sign:
            bundle = Bundle(bundle.signed.signed_with(SigningKey.load(args.sign).sign), bundle.payload)
        bundle.write(args.out)
        _describe(bundle, args.out)
        return 0
    bundle = Bundle.read(args.bundle)
    if args.bundle_command == "sign":
        key = SigningKey.load(args.key)
        Bundle(bundle.signed.signed_with(key.sign), bundle.payload).write(args.bundle)
        _say(f"signed {args.bundle} with key {key.public.key_id}")
        return 0
    _describe(bundle, args.bundle)
    if args.trust_key:
        trust = TrustStore(PublicKey.parse(k) for k in args.trust_key)
        _say(f"signature: good, by trusted key {bundle.signed.verified(trust, what=args.bundle)}")
    else:
        _say(f"digests: good; signed by {', '.join(s.get('key', '?') for s in bundle.signed.signatures) or 'nobody'}"
             " (give --trust-key to check the signature)")
    return 0


def _image_bundle(args: argparse.Namespace, health: dict[str, Any]) -> Any:
    """``bundle build --image-kind``: a bundle of image kinds (no wheels)."""
    from fogmesh.containers import parse_image_kind
    from fogmesh.deploy.images import image_bundle, pin
    from fogmesh.deploy.manifest import ImageSpec
    from fogmesh.errors import DeployRefused
    if args.wheels or args.project or not args.name or not args.version:
        raise DeployRefused("bad_bundle", "--image-kind builds a bundle of image kinds: give --name and --version, "
                            "and no wheels or --project")
    try:
        specs = [parse_image_kind(item) for item in args.image_kind]
    except ValueError as exc:
        raise DeployRefused("bad_bundle", str(exc)) from exc
    images = {}
    for k in specs:
        ref = pin(k.image)          # a tag: the digest its registry serves (no engine needed)
        images[k.name] = ImageSpec(ref=ref, service=k.service, memory=k.memory, cpus=k.cpus)
    return image_bundle(args.name, args.version, images, health=health, timeout_s=args.timeout)


def _wheels(given: list[str], project: str | None, tmp: Path) -> list[Path]:
    out: list[Path] = []
    for item in given:
        p = Path(item)
        out.extend(sorted(p.glob("*.whl")) if p.is_dir() else [p])
    if project:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(tmp), project],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            from fogmesh.errors import DeployRefused
            raise DeployRefused("bad_bundle", f"pip wheel {project} failed: {done.stderr.strip()[-800:]}")
        out.extend(sorted(tmp.glob("*.whl")))
    if not out:
        from fogmesh.errors import DeployRefused
        raise DeployRefused("bad_bundle", "no wheels: give the package's wheel and its dependencies, or --project DIR")
    return out


def _describe(bundle: Any, path: str) -> None:
    m = bundle.manifest
    _say(f"{path}: {m.label}, {m.payload_size / 1e6:.2f} MB in {len(m.chunks)} chunks, bundle {m.digest[:12]}")
    for name, spec in sorted(m.kinds.items()):
        _say(f"  kind {name}: {spec.weight}, timeout {spec.timeout_s:g} s, health args {json.dumps(spec.health_args)}")
    for w in m.wheels:
        _say(f"  wheel {w.file} ({w.size} bytes)")


def run_deploy(args: argparse.Namespace) -> int:
    from fogmesh.deploy.desired import parse_target
    from fogmesh.errors import DeployRefused
    action, rest = args.what[0], args.what[1:]
    try:
        target = parse_target(args.to) if args.to else None
    except ValueError as exc:
        print(f"fogmesh deploy: {exc}", file=sys.stderr)
        return 2
    need_target = action not in ("status", "history", "prune", "renew")
    if need_target and target is None:
        print("fogmesh deploy: say where with --to agent:ID | site:NAME | label:L | all", file=sys.stderr)
        return 2
    if (action == "remove") != bool(rest) or (action != "remove" and len(args.what) > 1):
        print("fogmesh deploy: usage: deploy BUNDLE | status | rollback | remove KIND | history | prune | renew",
              file=sys.stderr)
        return 2
    if args.timestamp_ttl <= 0 or (args.every is not None and not 0 < args.every < args.timestamp_ttl):
        print("fogmesh deploy: --timestamp-ttl must be positive, --every between 0 and it", file=sys.stderr)
        return 2
    try:
        return _deploy(args, action, rest, target)
    except DeployRefused as exc:
        print(f"fogmesh deploy: refused ({exc.code}): {exc}", file=sys.stderr)
        return 2


def _deploy(args: argparse.Namespace, action: str, rest: list[str], target: str | None) -> int:
    from fogmesh.deploy import commands
    from fogmesh.deploy.bundle_file import Bundle
    from fogmesh.deploy.operator import Operator
    from fogmesh.deploy.signing import PublicKey, SigningKey, TrustStore
    key = SigningKey.load(args.key) if args.key else None
    given = [PublicKey.parse(k) for k in args.trust_key]
    trust = TrustStore(given or ([key.public] if key else []), who="the agents trust (--trust-key)")
    stamp_trust = TrustStore([*trust.keys.values(), *([key.public] if key else []),
                              *(PublicKey.parse(k) for k in args.timestamp_key)],
                             who="the agents trust for timestamps")
    options = commands.RolloutOptions(canaries=args.canaries, soak_s=args.soak, max_failures_pct=args.max_failures,
                                      deadline_s=args.deadline, wait=not args.no_wait, timeout_s=args.timeout,
                                      wait_for_agents=args.wait_for_agents)
    say = (lambda _t: None) if args.json else _say
    with Operator(args.broker, root=args.root, key=key, trust=trust, stamp_trust=stamp_trust,
                  stamp_ttl_s=args.timestamp_ttl) as op:
        if action == "renew":
            if key is None:
                print("fogmesh deploy: renew needs the signing key (or a timestamp key): --key FILE", file=sys.stderr)
                return 2
            return commands.renew(op, _say, every_s=args.every)
        if action == "prune":
            out: Any = commands.prune(op, say)
        elif action == "status":
            out = commands.status(op, target, say)
        elif action == "history":
            out = commands.history(op, target, say)
        else:
            assert target is not None
            if action == "rollback":
                return commands.rollback(op, target, options, _say)
            if action == "remove":
                return commands.remove(op, rest[0], target, options, _say)
            if key is None:
                print("fogmesh deploy: pushing needs the signing key: --key FILE", file=sys.stderr)
                return 2
            return commands.deploy(op, Bundle.read(action), target, options, _say)
    if args.json:
        print(json.dumps(out, indent=1))
    return 0
