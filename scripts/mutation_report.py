#!/usr/bin/env python
"""Summarise a mutation-testing run: the score per module and every surviving mutant, sorted into kinds.

    pip install -e ".[dev]"
    OMP_NUM_THREADS=1 mutmut run --max-children 2      # the configuration is [tool.mutmut] in pyproject.toml
    python scripts/mutation_report.py > mutation_report.md
    # after adding tests: re-run only the survivors (in a fresh copy), then report both runs, the later one winning
    mutmut run $(python scripts/mutation_report.py --survivors)
    python scripts/mutation_report.py --root old-copy --root . > mutation_report.md

It reads what `mutmut run` left in `mutants/` (one `.meta` file per module, holding each mutant's exit status), and shows
each survivor as the line it changed. Survivors are sorted into kinds; only `behaviour` needs a test, the others are
explained by their kind:

- `wording`: the text of an error or warning message, or a value computed only to be put into one (tests match the
  parameter a message names, not every word);
- `docstring`: a docstring, which no code reads;
- `display`: what a progress bar shows (its description, whether it stays or is disabled);
- `one device`: a `device` argument dropped or set to None, which changes nothing while every tensor lives on the CPU
  (CI has no GPU; the device paths are checked on a GPU by `bench/gpu.sh`);
- `default`: the default value of a parameter in a signature. The signature is the documentation (`show_doc` and the
  API page render it), so a test could only restate the number; the defaults a promise rests on (never overwrite, check
  the model, stay quiet, warm-start) are tested by what they do, and a mutant of those is killed;
- `equivalent`: a change no input can tell apart (or none this machine can make); each is matched by an entry of
  `EXPLAINED` below, which gives the reason; `EXPLAINED` also sorts survivors the rules above miss into their kind;
- `behaviour`: anything else; each is listed with the line it changed.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import re
import sys
from collections import Counter, defaultdict
from difflib import SequenceMatcher
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", None: "not checked", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "caught by type check"}


def results(root: Path) -> dict:
    "{module: {mutant name: status}} from the `.meta` files of a mutmut run in `root`."
    out = {}
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        module = meta.relative_to(root / "mutants").as_posix()[:-len(".py.meta")].replace("/", ".")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out[module] = {k: STATUS.get(v, "suspicious") for k, v in codes.items()}
    return out


def _in_message(node, parents) -> bool:
    "Whether `node` sits inside a `raise` or a `warnings.warn(...)` call."
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Raise): return True
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("warn", "error"): return True
    return False


def message_only(source: str) -> tuple[set, dict]:
    """(functions every call of which ends up only in messages, {function: local names every read of which is inside
    one}), from the module's own source. A call assigned to such a local counts as ending up in a message."""
    tree = ast.parse(source)
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    local, owner = {}, {}
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        reads = defaultdict(list)
        for n in ast.walk(fn):
            owner.setdefault(n, fn.name)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load): reads[n.id].append(n)
        local[fn.name] = {v for v, rs in reads.items() if all(_in_message(r, parents) for r in rs)}
    def ends_in_message(c):
        if _in_message(c, parents): return True
        a = parents.get(c)
        return (isinstance(a, ast.Assign) and len(a.targets) == 1 and isinstance(a.targets[0], ast.Name)
                and a.targets[0].id in local.get(owner.get(c, ""), set()))
    calls = defaultdict(list)
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name): calls[n.func.id].append(n)
    helpers = {f for f, cs in calls.items() if cs and all(ends_in_message(c) for c in cs)}
    return helpers, local


def change(root: Path, module: str, mutant: str) -> tuple[list[str], list[str], bool]:
    """(removed lines, added lines, whether every removed line is in the function's signature) of a mutant against
    its original function, both read by mutmut's own parser from the mutated file."""
    import libcst as cst
    from mutmut.mutation import diff_apply as da
    path = module.replace(".", "/") + ".py"
    with contextlib.chdir(root):
        fns = da.read_functions_from_index(mutant, path)
        if fns is None:
            mod = da.read_mutants_module(path)
            fns = (da.read_original_function(mod, mutant), da.read_mutant_function(mod, mutant))
    a, b = (cst.Module([f]).code.strip().splitlines() for f in fns)
    fn = ast.parse("\n".join(a)).body[0]
    header = fn.body[0].lineno - 1                                     # decorators and the def line(s)
    removed, added, in_signature = [], [], True
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal": continue
        removed += [l.strip() for l in a[i1:i2]]; added += [l.strip() for l in b[j1:j2]]
        in_signature &= i2 <= header
    return removed, added, in_signature and bool(removed)


# Survivors read against the code and explained: (the mutant's function, a regex its mutated line matches, kind, why).
# A new survivor is `behaviour` until someone reads it and either writes the test that kills it or adds it here.
EXPLAINED = [
]


_STR = re.compile(r'[rbfu]?("""[\s\S]*?"""|"[^"\n]*"|\'[^\'\n]*\')', re.I)


def _function(name: str, module: str) -> str:
    "The function (or method) a mutant belongs to: `deq_ddim_nb.files.x__put__mutmut_3` -> `_put`."
    f = re.sub(r"__mutmut_\d+$", "", name[len(module) + 1:]).split("ǁ")[-1]
    return f[2:] if f.startswith("x_") and "ǁ" not in name else f


def explained(function: str, added: list[str]) -> tuple[str, str] | None:
    "(kind, why) of a survivor that `EXPLAINED` accounts for, else None."
    p = " ".join(added)
    for fn, pattern, k, why in EXPLAINED:
        if re.fullmatch(fn, function) and re.search(pattern, p): return k, why
    return None


def kind(removed: list[str], added: list[str], function: str = "", messages: tuple = (set(), {}),
         in_signature: bool = False) -> str:
    "The kind of a surviving mutant (see the module docstring); `messages` is `message_only` of its module."
    m, p = " ".join(removed), " ".join(added)
    if (e := explained(function, added)): return e[0]
    helpers, local = messages
    if function in helpers: return "wording"                              # a helper that only builds message text
    v = re.match(r"^(\w+)\s*=[^=]", m)
    if v and v.group(1) in local.get(function, set()): return "wording"  # a value read only by messages
    if re.match(r'^[rbfu]?("""|"|\')', m) and re.match(r'^[rbfu]?("""|"|\'|None)', p): return "docstring"
    cut = re.compile(r"\b(raise\s+\w+|warnings\.warn|warn)\b")
    a, b = cut.search(m), cut.search(p)
    if a and b and m[:a.end()] == p[:b.end()]: return "wording"          # same condition, same exception: only its text
    if not a and _STR.sub("S", m) == _STR.sub("S", p) and re.match(r"^[rbfu]?(\"|\')", m.strip()): return "wording"
    if in_signature: return "default"
    if re.search(r"\b(tqdm|desc=|leave=|disable=|set_postfix|bar\.)", m): return "display"
    if "device" in m and re.sub(r"\s", "", m) != re.sub(r"\s", "", p):
        a, b = re.sub(r"[\w.]*device[\w.]*", "D", m), re.sub(r"[\w.]*device[\w.]*", "D", p)
        some = re.escape(a).replace("D", "(?:D|None)")                  # some of the devices set to None
        if re.fullmatch(some, b) or re.sub(r",?\s*\w*=?D", "", a) == re.sub(r",?\s*\w*=?D", "", b): return "one device"
        if "generator" in m and re.search(r"(generator is None\)? (or True|and False)|generator is not None|device=None|\)\.to\()", p):
            return "one device"                                           # which device a generator draws on
    return "behaviour"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, action="append", help="a folder `mutmut run` ran in (it holds mutants/); "
                   "repeat it for a later run over some of the same mutants, whose results then win (default: .)")
    p.add_argument("--survivors", action="store_true", help="only print the names of the surviving mutants, one per line")
    args = p.parse_args(argv)
    roots = args.root or [Path(".")]
    res = {}
    for root in roots:
        r = results(root)
        if not r: p.error(f"argument --root: no mutants/*.meta under {root}; run `mutmut run` there first")
        for module, by in r.items():
            mine = res.setdefault(module, {})
            for name, status in by.items():
                if status != "not checked" or name not in mine: mine[name] = status
    if args.survivors:
        for by in res.values(): print("\n".join(n for n, st in by.items() if st in ("survived", "no tests")))
        return 0
    args.root = roots[-1]
    print("| module | mutants | killed | survived | no tests | timeout | not checked | score |")
    print("|---|---|---|---|---|---|---|---|")
    total = Counter()
    for module, by in res.items():
        c = Counter(by.values()); total.update(c)
        checked = c["killed"] + c["survived"] + c["no tests"] + c["timeout"]
        score = f"{(c['killed'] + c['timeout']) / checked:.1%}" if checked else "–"
        print(f"| {module} | {len(by)} | {c['killed']} | {c['survived']} | {c['no tests']} | {c['timeout']} | {c['not checked']} | {score} |")
    checked = total["killed"] + total["survived"] + total["no tests"] + total["timeout"]
    print(f"| all | {sum(total.values())} | {total['killed']} | {total['survived']} | {total['no tests']} | {total['timeout']} | "
          f"{total['not checked']} | {(total['killed'] + total['timeout']) / max(checked, 1):.1%} |")
    print("\nScore: (killed + timeout) / checked. A timeout counts as caught: the mutant made a run hang.\n")
    kinds = defaultdict(list)
    for module, by in res.items():
        src = args.root / (module.replace(".", "/") + ".py")
        messages = message_only(src.read_text()) if src.exists() else (set(), {})
        for name, status in by.items():
            if status not in ("survived", "no tests"): continue
            removed, added, in_signature = change(args.root, module, name)
            function = _function(name, module)
            kinds[kind(removed, added, function, messages, in_signature)].append((name, status, removed, added))
    print("| kind of survivor | count |\n|---|---|")
    KINDS = ("behaviour", "equivalent", "default", "wording", "docstring", "display", "one device")
    for k in KINDS: print(f"| {k} | {len(kinds[k])} |")
    for k in KINDS:
        print(f"\n## {k} ({len(kinds[k])})\n")
        for name, status, removed, added in kinds[k]:
            short = name.split(".", 1)[1].replace("ǁ", ".")
            e = explained(_function(name, module), added)
            print(f"- `{short}` ({status}): `{' / '.join(removed)[:140]}` → `{' / '.join(added)[:140]}`"
                  + (f": {e[1]}" if e else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
