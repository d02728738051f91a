"""Derive, check or verify the embedded default dataset.

    python -m cmarl_env.datasets verify            # shipped files against their sha256 (no CityLearn needed)
    python -m cmarl_env.datasets check             # re-derive from the citylearn==2.1.2 wheel, require identity
    python -m cmarl_env.datasets derive --out DIR  # re-derive into DIR and print the files' sha256

``check`` and ``derive`` need the ``[citylearn]`` extra and the wheel (downloaded
with pip once, sha256-pinned, then cached; ``--cache-dir`` or ``CMARL_CACHE_DIR``
choose the cache). To replace the shipped files: ``derive --out cmarl_env/datasets``
and copy the printed hashes into ``cmarl_env.data.EMBEDDED_SHA256``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from cmarl_env import data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmarl_env.datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check the shipped files against their sha256")
    check = sub.add_parser("check", help="re-derive from the citylearn==2.1.2 wheel and require identity")
    derive = sub.add_parser("derive", help="re-derive into a folder and print the files' sha256")
    derive.add_argument("--out", required=True, help="output folder (cmarl_env/datasets to replace the shipped files)")
    for p in (check, derive):
        p.add_argument("--cache-dir", default=None, help="cache for the wheel and the converted csv files")
    args = parser.parse_args(argv)

    if args.command == "verify":
        loaded = data.load_embedded()
        print(f"{loaded.name}: {loaded.n_buildings} buildings x {loaded.n_steps} steps, sha256 verified")
        return 0
    derived = data.derive_dataset(cache_dir=args.cache_dir)
    if args.command == "derive":
        hashes = data.write_embedded(derived, args.out)
        for name, digest in hashes.items():
            print(f"{digest}  {name}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data.write_embedded(derived, tmp)
        problems = data.compare_embedded(tmp)
    if problems:
        print("re-derived dataset differs from the shipped one:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"re-derived {derived.name} from citylearn=={data.fetch.CITYLEARN_WHEEL_VERSION}: identical to the shipped arrays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
