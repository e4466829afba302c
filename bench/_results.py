"""Where the bench/ scripts write, and how: a folder the user names (--out), by default one in the user's cache, and the
package's recorded results only with --record (files there replaced only with --force). Every file goes through
`deq_ddim_nb.files.publish`; every output is checked before the work starts. Shared by the scripts in this folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from deq_ddim_nb.files import check_targets, publish, read_text, results_dir


def add_output_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, metavar="DIR",
                       help="folder for the results (default: $XDG_CACHE_HOME/deq-ddim-nb/bench, ~/.cache/deq-ddim-nb/bench)")
    where.add_argument("--record", action="store_true", help="write into the package's recorded results (deq_ddim_nb/assets/results)")
    p.add_argument("--force", action="store_true", help="replace result files that are already there")
    return p


def as_options(e: Exception) -> str:
    "A message of deq_ddim_nb.files in the words of these scripts' options."
    return str(e).replace("with overwrite", "with --force").replace("record=True", "--record")


class Results:
    "The output folder of one run: its files are checked now, before any work, and published later through `publish`."
    def __init__(self, parser: argparse.ArgumentParser, args, names):
        self.parser, self.force = parser, args.force
        try: self.dir = results_dir(args.out, record=args.record)
        except ValueError as e: parser.error(f"argument --out: {as_options(e)}")
        self.names, self.published = list(names), set()
        try: check_targets([self.dir / n for n in self.names], self.force, make_dirs=True)
        except (OSError, ValueError) as e:
            parser.error(f"argument {'--record' if args.record else '--out'}: {as_options(e)}")

    def path(self, name: str) -> Path: return self.dir / name

    def existing(self, name: str) -> str | None:
        "The text of a result file already in the folder (to merge with), or None."
        p = self.dir / name
        return read_text(p, "result file") if p.exists() or p.is_symlink() else None

    def publish(self, files: dict) -> list[Path]:
        """Publish {name: content} together. A file this run published before (a checkpoint of a long run) is replaced;
        any other only with --force, as checked at the start."""
        again = all(n in self.published for n in files)
        paths = publish({self.dir / n: v for n, v in files.items()}, overwrite=self.force or again, make_dirs=True)
        self.published.update(files)
        return paths
