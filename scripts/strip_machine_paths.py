"""Rewrite a results folder's records so that they name no folder of the machine that made them.

    python scripts/strip_machine_paths.py FOLDER    # every .json, .log and .md below it, in place

A run records paths as it was given them: /tmp/results/gpu_peers/runs/resnet9/seed0, a data folder in
/tmp, the Python packages' folders in its warnings. Before results are committed (gpu_run.sh packs
them this way), each such path keeps only what means something on any machine: from its `runs/` on
(a sweep's run folder), from the project's own folder on (rn18_configs/..., fast_cifar/...), the part below
`site-packages/`, or else its last name alone.
"""
import re
import sys
from pathlib import Path

from fast_cifar.errors import UserError, exit_on_user_error
from fast_cifar.files import atomic_path

# an absolute path into a machine's own folders, or a folder beside a checkout that only its machine has
MACHINE_PATH = re.compile(r"(?<![\w.])(?:/(?:tmp|root|home|work|opt|mnt|var|usr|scratch)/|\.carry/|\.\./shared/)"
                          r"[^\s\"',;)\]`]*")
ANCHORS = ("runs/", "rn18_configs/", "fast_cifar/", "benchmarks/", "scripts/", "tests/", "data/")
SUFFIXES = (".json", ".log", ".md")


def portable(path):
    """What of one machine path to keep (see the module's docstring)."""
    for packages in ("site-packages/", "fast_cifar_site/"):
        if packages in path:
            return "site-packages/" + path.split(packages, 1)[1]
    starts = [path.find("/" + anchor) + 1 for anchor in ANCHORS if "/" + anchor in path]
    if starts:
        return path[min(starts):]
    return path.rstrip("/").rsplit("/", 1)[-1] or "."


def strip(text):
    return MACHINE_PATH.sub(lambda match: portable(match.group(0)), text)


@exit_on_user_error
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        raise UserError("usage: strip_machine_paths.py FOLDER (a folder of results)")
    changed = 0
    for path in sorted(Path(argv[0]).rglob("*")):
        if path.suffix in SUFFIXES and path.is_file():
            text = path.read_bytes().decode("utf-8", "surrogateescape")  # every byte back as it was, \r too
            if (stripped := strip(text)) != text:
                with atomic_path(path) as temporary:
                    temporary.write_bytes(stripped.encode("utf-8", "surrogateescape"))
                changed += 1
    print(f"{changed} files rewritten under {argv[0]}")


if __name__ == "__main__":
    main()
