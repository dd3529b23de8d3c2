"""Long fuzzing runs of mesh's decoders with atheris (coverage-guided, libFuzzer for Python).

CI fuzzes every decoder with hypothesis (``tests/fuzz``, tens of thousands of cases each); this
driver is for the runs that take hours. It feeds the same targets (``tests/fuzz/targets.py``:
``codec``, ``frame``, ``gossip``, ``raft``, ``conf``, ``meta``, ``kv``), so a target fails here
exactly when it would fail there: on any exception but the decoder's own error, on an accepted
input that does not survive the round trip, or when the codec twins disagree.

Setup (atheris is not a CI dependency)::

    pip install -e '.[fuzz]'            # atheris>=2.3; needs a clang-built libFuzzer on some systems

Run from the repository root (or anywhere: the root is put on the path)::

    python tools/fuzz_decoders.py --target codec                       # until it finds something
    python tools/fuzz_decoders.py --target gossip -max_total_time=3600 corpus/gossip
    python tools/fuzz_decoders.py --target raft -jobs=4 -workers=4 corpus/raft
    MESH_PURE=0 python tools/fuzz_decoders.py --target meta -max_total_time=600
    python tools/fuzz_decoders.py --list

Every argument but ``--target`` goes to libFuzzer (``-help=1`` lists them). Directories are
corpora: libFuzzer reads them and adds what finds new coverage. Without one, a fresh temporary
corpus is seeded with valid encodings from the real encoders (its path is printed; pass it next
time to go on from there).

Coverage guides libFuzzer through Python code only: mesh, msgpack's pure unpacker and the
targets are instrumented, the compiled codec is not. So the driver selects the pure hot path
unless ``MESH_PURE`` says otherwise: about ten times slower per input than ``MESH_PURE=0``,
but it learns the msgpack structure of bodies, where the compiled path leaves it blind past
the codec (on ``gossip``, a 15 s run reached 330 edges against 80). The ``codec`` target runs
both twins on every input whichever is selected.

A failure leaves ``crash-<sha1>`` (see ``-artifact_prefix=``) and a traceback. Replay it with::

    python tools/fuzz_decoders.py --target codec crash-<sha1>

then fix the decoder and add the input as an ``@example`` to ``tests/fuzz/test_<decoder>_fuzz.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Fuzz one of mesh's decoders with atheris; other arguments go to libFuzzer.",
        epilog="Example: python tools/fuzz_decoders.py --target gossip -max_total_time=600")
    parser.add_argument("--target", default="codec",
                        help="the decoder to fuzz: codec, frame, gossip, raft, conf, meta or kv (default codec)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    return parser.parse_known_args(argv)


def _seeded_corpus(name: str, seeds: list[bytes]) -> str:
    path = tempfile.mkdtemp(prefix=f"mesh-fuzz-{name}-")
    for i, data in enumerate(seeds):
        Path(path, f"seed-{i:03d}").write_bytes(data)
    print(f"fuzz_decoders: seeded a fresh corpus with {len(seeds)} inputs at {path}", file=sys.stderr)
    return path


def _report(name: str, outcomes: Counter[str]) -> None:
    total = sum(outcomes.values())
    if total:
        shares = ", ".join(f"{what} {count / total:.1%}" for what, count in outcomes.most_common())
        print(f"fuzz_decoders: {name}: {total} inputs: {shares}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args, rest = _parse(sys.argv[1:] if argv is None else argv)
    # the pure twin by default: its msgpack pre-scan and unpacker are Python, so instrumented, and
    # coverage then guides the fuzzer into bodies (the codec target runs both twins anyway)
    os.environ.setdefault("MESH_PURE", "1")
    try:
        import atheris
    except ImportError:
        print("fuzz_decoders: atheris is not installed; pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    # instrument what we fuzz: every mesh module and the targets, imported here for the first time
    with atheris.instrument_imports(include=["mesh", "tests.fuzz", "msgpack"]):
        from mesh._core import IMPLEMENTATION
        from tests.fuzz import targets
    if args.list:
        print("\n".join(targets.NAMES))
        return 0
    if args.target not in targets.NAMES:
        print(f"fuzz_decoders: no target {args.target!r}; one of {', '.join(targets.NAMES)}", file=sys.stderr)
        return 2
    # corpora and crash files: anything that is not a -flag; seed a fresh corpus if there is none
    if not any(not a.startswith("-") for a in rest):
        rest.append(_seeded_corpus(args.target, targets.seeds(args.target)))
    print(f"fuzz_decoders: target {args.target} on the {IMPLEMENTATION} hot path", file=sys.stderr)
    run, name = targets.run, args.target
    outcomes: Counter[str] = Counter()

    def test_one_input(data: bytes) -> None:
        outcomes[run(name, data)] += 1
        total = targets.CASES[name]
        if total >= 1 << 16 and not total & (total - 1):   # libFuzzer exits without atexit: report as it goes
            _report(name, outcomes)

    atheris.Setup([sys.argv[0], *rest], test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
