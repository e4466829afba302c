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
    # wording: text that only messages read
    (r"_accepted", r".", "wording", "builds the sentence saying what is accepted, which only error messages quote"),
    (r"load_target", r"_tensor_to_unit\(x, p\.name, None\)", "wording", "`accepted` is only quoted in the error message"),
    (r".*", r'check_\w+\((None|"XX\w*XX"|"[A-Z_]+")\s*,', "wording", "the parameter name a check puts in its message"),
    (r"read_recorded", r'read_text\(p, (None|"XX|"[A-Z ]+"|\))', "wording", "`what` only names the file in read_text's messages"),
    (r"invert", r"bad_(fwd|adj)\.append|_warn_unconverged\(", "wording", "values that only the unconverged-solve warning quotes"),
    (r"schedule_kwargs", r'\("(thresholding|rescale_betas_zero_snr)", ', "wording", "the reason quoted when the key is refused"),
    (r"_check_solver_args", r"of shape", "wording", "part of the error message"),
    # equivalent: no input tells them apart (or none this machine can make)
    (r"deq_eps", r"torch\.cat\(\[xs\[1:\], x_T\[None\]\], \)", "equivalent", "torch.cat's dim defaults to 0"),
    (r"solver_options", r"chain_slopes\(\*\(v\.to\(", "equivalent",
     "chain_newton casts ratio and slope to the trajectory's dtype itself (_chain_vector)"),
    (r"deq_sample", r"if \(info\.residuals\) or True", "equivalent", "a solve runs at least one round: residuals is never empty"),
    (r"deq_sample", r'check_number\("tol", tol, (lo=None, )?lo_open=True\)', "equivalent",
     "the solver checks tol > 0 again, with the same message"),
    (r"deq_sample", r'check_int\("max_iter", max_iter, (lo=None)?\)', "equivalent",
     "the solver checks max_iter >= 1 again, with the same message"),
    (r"_check_options", r'check_int\(("max_batch", )?(max_batch, )?(1|None)?\)', "equivalent",
     "max_batch is checked again, with the same message, where deq_sample wraps the model"),
    (r"record", r"if res <= self\.best_res", "equivalent", "on an exact tie the two iterates are equally good answers"),
    (r"__repr__", r'"XX-XX"', "display", "what an empty trace's repr shows"),
    (r"_as_target", r"s\.endswith\(None\)|\(\"\", \"XX\.XX\", \"\.\.\"\)", "equivalent",
     "os.altsep is None on POSIX, and pathlib never gives '.' as a name"),
    (r"invert", r"_check_options\(solver_kwargs, backward_kwargs, warm_start, None,", "equivalent",
     "max_batch is checked again, with the same message, where deq_sample wraps the model"),
    (r"invert", r"zero_grad\(set_to_none=(None|False)\)", "equivalent", "the next backward writes the same gradient either way"),
    (r"invert", r"better = l <= best_loss", "equivalent", "differs only on an exact tie of two epochs' losses"),
    (r"picard|anderson", r"mixing (==|!=) 2|\(mixing == 1\) and False", "equivalent",
     "the shortcut for β = 1: β f(z) + (1 − β) z is f(z) exactly for finite z"),
    (r"anderson", r"new_zeros\(G, m \+ [12], (m \+ [12]|[12])\)", "equivalent",
     "only H[:, :n+1, :n+1] and y[:, :n+1] are read: a larger buffer is never seen"),
    (r"anderson", r"reshape\(n_first, -1, n,? ?\)", "equivalent", "the cumulative sum runs over the first dim either way"),
    (r"anderson", r"\[:, 1:n \+ 2, 0\]", "equivalent", "the solution has n + 1 rows: slicing past the end is the same slice"),
    (r"anderson", r"if k (<= 2|< 3): z = fz", "equivalent", "from round 2 on, z is recomputed from the history at the top of the next round"),
    (r"anderson", r"n_first = .* else 2", "equivalent", "n_first is read only with triangular=True, which needs group_dims"),
    (r"anderson", r"torch\.eye\(n, (dtype=None, )?device=z0\.device\)", "equivalent",
     "the identity is exact in float32 and is promoted where it is multiplied"),
    (r"broyden", r'einsum\("(GI,GID->GD|GID,GD->GI)"', "equivalent", "einsum's subscripts are labels: upper case names the same contraction"),
    (r"broyden", r"tr\.best if \(tr\.best is not None\) (or True|and False) else fz", "equivalent",
     "after a round the best iterate exists, and after a first-round stop it is that round's f(z)"),
    (r"broyden", r"den\.abs\(\) >= 1e-30", "equivalent", "differs only for a denominator of exactly 1e-30"),
    (r"broyden", r"zeros_like\(W\[:, :min\(mem, [23] \* W\.shape\[1\]\) [+-] W\.shape\[1\]\]\)", "equivalent",
     "how far the history's capacity grows at a time: unused columns are zeros"),
    (r"chain_newton", r"if secant or past", "equivalent", "with secant = 0 nothing is ever put in `past`, so `secant or past` is false as well"),
    (r"chain_newton", r"ok = den (>=|>) torch\.finfo\(z0\.dtype\)\.tiny (\*|/)", "equivalent",
     "the threshold for a vanishing step: both values are far below any step a solve takes"),
    (r"_chain_vector", r"\.to\(None\)", "equivalent", "ratio and slope are promoted to the trajectory's dtype where they multiply it"),
    (r"_tensor_to_unit", r"x\.to\(None\) / 127\.5", "equivalent", "uint8 divided by a float is float32 in torch"),
    (r"_tensor_to_unit", r"lo <= -1 - 1e-3|hi >= 1 \+ 1e-3", "equivalent",
     "x is float32 here and ±1.001 is not a float32 number, so < and <= agree on every input"),
    (r"_read_image", r"astype\(None\)", "equivalent", "numpy's astype(None) is float64"),
    (r"_read_image", r"float\(x\.abs\(\)\.max\(\)\) (>=|>) (1|2) \+ 1(e-6|\.000001)|isfinite\(x\)\.all\(\)\) and", "equivalent",
     "8- and 16-bit pixels always land in [-1, 1]: the guard cannot fire"),
    (r"load_target", r"allow_pickle=None|np\.load\(p, \)", "equivalent", "np.load refuses pickles by default"),
    (r"load_target", r"weights_only=None|map_location=\"cpu\", \)", "equivalent",
     "torch 2.6 and later load with weights_only=True by default"),
    (r"_umask", r"(?i)/proc/self/status|XXUmask|umask:|os\.umask\((None|19)\)|old = None", "equivalent",
     "when the /proc reading misses, the portable fallback finds the same umask; the fallback itself is not reached on Linux"),
    (r"_name_max", r"PC_NAME_MAX|pc_name_max|return 256", "equivalent",
     "the fallback when pathconf fails: not reached on Linux, whose limit pathconf reports"),
    (r"_check_dir", r"os\.W_OK & os\.X_OK", "equivalent",
     "CI runs as root, whom os.access never refuses; a read-only directory is caught when the file is created"),
    (r"_check_target", r"t\.parent\.is_dir\(\)\) (and False|or True)|Path\(\"XX\.XX\"\)", "equivalent",
     "a missing parent is made on the same file system, with the same name limit"),
    (r"_write_temp", r"stem = None|\[:41\]", "equivalent", "the temporary file's name, which nothing reads"),
    (r"_backup", r"range\(101\)|\[:41\]|token_hex\((None|5)\)", "equivalent", "the backup's name, and how many names it tries"),
    (r"publish", r"key=None|sorted\(\{t\.parent for t in targets\}, \)|key=lambda d: None", "equivalent",
     "paths sort parents before their children anyway"),
    (r"publish", r"backup\.unlink\(missing_ok=(None|False)\)", "equivalent", "the backup exists at that point"),
    (r"publish", r"os\.O_RDONLY & os\.O_DIRECTORY", "equivalent", "O_RDONLY is 0: the directory is opened read-only either way"),
    (r"publish_file", r"tmp\.unlink\(missing_ok=(None|False)\)", "equivalent", "the temporary file exists at that point"),
    (r"png_bytes", r'\.to\("cpu", (None)?\)', "equivalent", "a float64 image gives the same 8-bit pixels"),
    (r"png_bytes", r'format="png"', "equivalent", "PIL reads the format name case-insensitively"),
    (r"read_text", r'"UTF-8"', "equivalent", "the same codec"),
    (r"read_recorded|csv_text", r"newline=None|StringIO\(text, \)", "equivalent",
     "on POSIX newline=None writes '\\n', and no recorded CSV holds a line break inside a field"),
    (r"default_results_dir", r'"XXXX"', "equivalent", "a relative base is ignored in favour of ~/.cache, like an empty one"),
    (r"output_to_eps", r'"(XXepsilonXX|EPSILON)"', "equivalent", "a shortcut: the general path gives an ε-model's output back unchanged"),
    (r"output_to_eps", r"bool\(None\)|idx > len\(self\.t\)", "equivalent",
     "an index past the end is clamped and then fails the equality test, which raises the same error"),
    (r"output_to_eps", r"x0_eps if \(x0 is None\) or True", "equivalent", "x̂_0 recomputed from ε is the model's x̂_0 to rounding"),
    (r"make", r'check_int\("n_train", n_train, (lo=None, |lo=1, )?(hi=None|hi=N_TRAIN_MAX)?\)', "equivalent",
     "make_betas and make_timesteps check n_train again, with the same bounds and message"),
    (r"ddim_sample|ddim_invert", r"sched\.to\(x_(T|0)\.device, (None)?\)", "equivalent",
     "the coefficients are cast to the state's dtype where they meet it (ddim_step)"),
    # one device: a device dropped, which the CPU cannot tell
    (r"load_target", r"map_location=None|torch\.load\(p, weights_only=True\)", "one device", "tensors saved from the CPU load on the CPU"),
    (r"png_bytes", r'\.to\((None, )?torch\.float32\)', "one device", "the CPU copy PIL needs; every tensor in CI is on the CPU"),
    (r"init_trajectory", r"\.to\(dtype=x_T\.dtype\)|dtype=x_T\.dtype, \)", "one device", "the device of x_T, the only one in CI"),
    (r"to", r"v\.to\(dtype=dtype\)|replace\(self, abar=", "one device", "the schedule's device, the only one in CI"),
    (r"output_to_eps", r"v\.to\(dtype=x\.dtype\)", "one device", "the states' device, the only one in CI"),
    (r"deq_sample", r"state_dtype=x_T\.dtype, \)", "one device", "the device of x_T, the only one in CI"),
    (r"anderson", r"torch\.eye\(n, dtype=z0\.dtype, \)", "one device", "the device of z0, the only one in CI"),
    (r"invert", r"math\.inf, dtype=target\.dtype, (device=None)?\)", "one device", "the target's device, the only one in CI"),
    (r"make", r"torch\.ones\(1, (dtype=None)?\)", "equivalent", "1.0 is exact in float32 and is promoted where it joins the float64 ᾱ"),
    (r"make", r"abar > MIN_ABAR", "equivalent", "differs only for a ᾱ of exactly MIN_ABAR"),
    (r"make", r"room <= -1e-12|room < -1\.000000000001", "equivalent",
     "a tolerance for rounding in 1 − ᾱ_prev − σ²: valid schedules have room ≥ 0, invalid ones far below"),
    (r"make_timesteps", r"astype\(None\)|np\.array\(t, (dtype=None)?\)", "equivalent",
     "the integers are the same: t is made int64 on the way out (or already is)"),
    (r"make_timesteps", r"if len\(t\) != T (or|and) t\[0\] < 0 (or|and) t\[-1\] (>=|>) n_train (or|and) not \(np\.diff\(t\) (>|>=) 0\)",
     "equivalent", "a guard no accepted input reaches: every spacing gives T increasing timesteps in [0, N)"),
    (r"output_to_eps", r"clamp\(max=len\(self\.t\) [-+] \d\)", "equivalent",
     "an index past the end fails the equality test either way, which raises the same error"),
    (r"ddim_sample|ddim_invert", r"state_dtype=x_(T|0)\.dtype, \)|state_dtype=x_0\.dtype, name=", "one device",
     "the device of the states, the only one in CI"),
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


def merge(res: dict, later: dict) -> None:
    """Add the results of a later run to `res` ({module: {mutant: status}}): a mutant the later run checked takes its
    status. A function whose mutants differ in number was edited between the runs, so its numbers name other mutants
    now: the later run's results replace the earlier ones for that whole function."""
    count = lambda d: Counter(re.sub(r"__mutmut_\d+$", "", n) for n in d)
    for module, by in later.items():
        mine = res.setdefault(module, {})
        edited = {f for f, n in count(by).items() if count(mine).get(f, n) != n}
        for name in [n for n in mine if re.sub(r"__mutmut_\d+$", "", n) in edited]: del mine[name]
        for name, status in by.items():
            if status != "not checked" or name not in mine: mine[name] = status


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
        merge(res, r)
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
