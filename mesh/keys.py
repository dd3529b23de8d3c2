"""``python -m mesh.keys``: make, show and list node keys.

    python -m mesh.keys generate --out keys/ [--id n1] [--force]
    python -m mesh.keys show keys/n1.key          # public part only, never a secret
    python -m mesh.keys trust trusted/            # every identity a node would accept
    python -m mesh.keys bundle trusted/ --out cluster.pub   # one file to ship to every node

``generate`` writes ``<id>.key`` (secrets, mode 0600) and ``<id>.pub`` (share it: copy it into
every node's trust folder); the id defaults to the host name. See
:mod:`mesh.security.keys` for the files and :mod:`mesh.security.trust` for rotation.
``--json`` prints one JSON document instead of text. Exit status: 0 done, 1 a key or trust
file problem (the message names the file and the field), 2 a usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import sys
import time

from mesh.security.errors import KeyFileError
from mesh.security.keys import (PUBLIC_SUFFIX, PublicIdentity, generate, identities_to_toml, iso_utc,
                                load_public, write_keys)
from mesh.security.trust import TrustStore


def _describe(ident: PublicIdentity, now: float) -> list[tuple[str, str]]:
    rows = [("node_id", ident.node_id), ("created", f"{ident.created} ({iso_utc(ident.created)})"),
            ("curve_public", ident.curve_public.decode("ascii")), ("verify_key", ident.verify_key.hex())]
    if ident.expires is not None:
        state = "EXPIRED" if ident.expired(now) else "accepted until then"
        rows.append(("expires", f"{ident.expires} ({iso_utc(ident.expires)}, {state})"))
    return rows


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def cmd_generate(args: argparse.Namespace) -> int:
    node_id = args.id or socket.gethostname()
    keys = generate(node_id)
    secret_path, public_path = write_keys(keys, args.out, force=args.force)
    if args.json:
        print(json.dumps({"key": secret_path, "pub": public_path, **keys.public.to_dict()}))
    else:
        print(f"wrote {secret_path} (secret, mode 0600) and {public_path} (public)")
        _print_rows(_describe(keys.public, time.time()))
        print(f"next: copy {public_path} into the trust folder of every node", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ident = load_public(args.file)
    try:
        mode = stat.S_IMODE(os.stat(args.file).st_mode)
    except OSError:
        mode = 0
    if not args.file.endswith(PUBLIC_SUFFIX) and mode & 0o077 and _holds_secret(args.file):
        print(f"warning: {args.file} holds secret keys and group or others may read it "
              f"(mode {mode:04o}); run: chmod 600 {args.file}", file=sys.stderr)
    if args.json:
        print(json.dumps(ident.to_dict()))
    else:
        _print_rows(_describe(ident, time.time()))
    return 0


def _holds_secret(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"curve_secret" in f.read(1 << 16)
    except OSError:
        return False


def cmd_trust(args: argparse.Namespace) -> int:
    store = TrustStore.load(args.source)
    now = time.time()
    idents = store.all_identities()
    if args.json:
        print(json.dumps({"source": args.source, "identities": [
            dict(i.to_dict(), expired=i.expired(now), file=store.origin(i)) for i in idents]}))
        return 0
    if not idents:
        print(f"{args.source}: no trusted identity (every peer would be refused)", file=sys.stderr)
        return 0
    rows = [("NODE", "CREATED", "EXPIRES", "CURVE PUBLIC (Z85)", "VERIFY KEY (hex)")]
    for i in idents:
        expires = "-" if i.expires is None else iso_utc(i.expires) + (" EXPIRED" if i.expired(now) else "")
        rows.append((i.node_id, iso_utc(i.created), expires, i.curve_public.decode("ascii"), i.verify_key.hex()))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    nodes = len({i.node_id for i in idents})
    print(f"{len(idents)} identities of {nodes} nodes ({len(store)} accepted now)", file=sys.stderr)
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    idents: list[PublicIdentity] = []
    for source in args.sources:
        idents.extend(TrustStore.load(source).all_identities())
    TrustStore(idents)          # refuses a key claimed by two nodes before anything is written
    text = identities_to_toml(sorted(set(idents), key=lambda i: (i.node_id, -i.created)))
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    if os.path.exists(args.out) and not args.force:
        raise KeyFileError(f"{args.out}: already exists; not overwriting it (use --force)", path=args.out)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {len(set(idents))} identities to {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.keys", description="Make, show and list mesh node keys.",
        epilog="Exit status: 0 done, 1 a key or trust file problem, 2 a usage error.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", parents=[common], help="make a node's key pairs (<id>.key, <id>.pub)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the files (made if missing)")
    p.add_argument("--id", metavar="NODE_ID", help="the node id (default: this host's name)")
    p.add_argument("--force", action="store_true", help="replace existing files of that id")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("show", parents=[common], help="the public part of a .key or .pub file (never a secret)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("trust", parents=[common], help="list the identities a trust folder or file holds")
    p.add_argument("source", metavar="DIR_OR_FILE")
    p.set_defaults(func=cmd_trust)

    p = sub.add_parser("bundle", parents=[common], help="gather trust folders/files into one file of [[key]] tables")
    p.add_argument("sources", nargs="+", metavar="DIR_OR_FILE")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write ('-': standard output)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
