"""Every public function and class of every module says what it does and what each of its arguments is.

An argument counts as documented when it has a comment beside it (nbdev's docments style, which `show_doc` and the
API page render) or when the docstring names it; a dataclass field when its declaration carries a comment or the
class docstring names it."""
import dataclasses, importlib, inspect, pkgutil, re, sys
from pathlib import Path

import pytest

import deq_ddim_nb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from build_site import argument_docs                                   # the API page's argument tables

MODULES = sorted(m.name for m in pkgutil.iter_modules(deq_ddim_nb.__path__) if not m.name.startswith("_"))


def _named(name: str, doc: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", doc) is not None


def undocumented(module) -> list:
    """The public objects of `module` without a docstring, and the arguments or fields that nothing documents: neither
    the table the API page shows (`argument_docs`) nor the docstring."""
    missing = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != module.__name__: continue
        doc = obj.__doc__ or ""
        if not doc.strip() or (inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(f"{name}(")):
            missing.append(f"{name}: no docstring"); continue                  # a dataclass's generated doc is no doc
        if inspect.isclass(obj) and inspect.isfunction(obj.__init__): doc += "\n" + (obj.__init__.__doc__ or "")
        sep = "." if dataclasses.is_dataclass(obj) else "({})"
        missing += [f"{name}.{a}" if sep == "." else f"{name}({a})"
                    for a, note in argument_docs(obj).items() if not note and not _named(a, doc)]
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
