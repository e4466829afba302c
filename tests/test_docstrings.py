"""Every public function and class of every module says what it does and what each of its arguments is.

An argument counts as documented when it has a comment beside it (nbdev's docments style, which `show_doc` and the
API page render) or when the docstring names it; a dataclass field when its declaration carries a comment or the
class docstring names it."""
import dataclasses, importlib, inspect, io, pkgutil, re, tokenize

import pytest
from fastcore.docments import docments

import deq_ddim_nb

MODULES = sorted(m.name for m in pkgutil.iter_modules(deq_ddim_nb.__path__) if not m.name.startswith("_"))


def _named(name: str, doc: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", doc) is not None


def _field_comments(cls) -> set:
    "The dataclass fields whose declaration line (in the class body itself) ends in a comment."
    src = inspect.getsource(cls)
    lines = src.splitlines()
    commented = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(src).readline) if tok.type == tokenize.COMMENT}
    out = set()
    for i, line in enumerate(lines, 1):
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and i in commented: out.add(m.group(1))
    return out


def undocumented(module) -> list:
    "The public objects of `module` without a docstring, and the arguments or fields that nothing documents."
    missing = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != module.__name__: continue
        doc = obj.__doc__ or ""
        if not doc.strip() or (inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(f"{name}(")):
            missing.append(f"{name}: no docstring"); continue                  # a dataclass's generated doc is no doc
        if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
            commented = _field_comments(obj)
            missing += [f"{name}.{f.name}" for f in dataclasses.fields(obj) if f.name not in commented and not _named(f.name, doc)]
            continue
        f = obj.__init__ if inspect.isclass(obj) else obj
        if inspect.isclass(obj):
            if not inspect.isfunction(f): continue                               # object's or a C base's __init__
            doc += "\n" + (f.__doc__ or "")
        try: comments = docments(f, full=False)
        except (OSError, TypeError): comments = {}
        missing += [f"{name}({p})" for p in inspect.signature(f).parameters
                    if p != "self" and not comments.get(p) and not _named(p, doc)]
    return missing


@pytest.mark.parametrize("modname", MODULES)
def test_every_public_function_documents_each_argument(modname):
    missing = undocumented(importlib.import_module(f"deq_ddim_nb.{modname}"))
    assert not missing, f"{len(missing)} undocumented in deq_ddim_nb.{modname}: {', '.join(missing)}"


def test_the_rule_sees_an_undocumented_argument_a_comment_and_a_named_one(tmp_path, monkeypatch):
    (tmp_path / "fake_mod.py").write_text(
        'import dataclasses\n__all__ = ["f", "g", "R"]\n'
        'def f(a, b, c,  # what c is\n      d):\n    "Uses `a` and d."\n'
        'def g(x): pass\n'
        '@dataclasses.dataclass\nclass R:\n    "Holds `u`."\n    u: int\n    v: int  # what v is\n    w: int\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert undocumented(importlib.import_module("fake_mod")) == ["f(b)", "g: no docstring", "R.w"]
