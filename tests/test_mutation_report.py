"How scripts/mutation_report.py sorts a surviving mutant into a kind (the run itself is too slow for a test)."
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("mutation_report", Path(__file__).resolve().parents[1] / "scripts" / "mutation_report.py")
mr = importlib.util.module_from_spec(spec); spec.loader.exec_module(mr)


def test_each_kind_of_survivor_is_recognised():
    k = mr.kind
    assert k(['"Solve it."'], ['"XXSolve it.XX"']) == "docstring"
    assert k(['raise ValueError(f"tol must be > 0, got {tol}")'], ['raise ValueError(f"XXtol must be > 0, got {tol}XX")']) == "wording"
    assert k(["m:int=5,"], ["m:int=6,"], in_signature=True) == "default"
    assert k(['bar = tqdm(total=n, desc="DEQ", leave=False)'], ['bar = tqdm(total=n, desc="DEQ", leave=True)']) == "display"
    assert k(["y = x.to(device=x_T.device)"], ["y = x.to(device=None)"]) == "one device"
    assert k(["inp = torch.cat([xs[1:], x_T[None]], 0)"], ["inp = torch.cat([xs[1:], x_T[None]], )"], "deq_eps") == "equivalent"
    assert k(["if res < s.tol:"], ["if res <= s.tol:"], "record") == "behaviour"


def test_an_explanation_applies_only_to_its_own_function():
    assert mr.explained("deq_eps", ["inp = torch.cat([xs[1:], x_T[None]], )"])[0] == "equivalent"
    assert mr.explained("deq_update", ["inp = torch.cat([xs[1:], x_T[None]], )"]) is None


def test_a_function_edited_between_runs_takes_the_later_runs_results(tmp_path):
    import json
    for root, codes in (("a", {"m.x_f__mutmut_1": 0, "m.x_f__mutmut_2": 1, "m.x_g__mutmut_1": 0}),
                        ("b", {"m.x_f__mutmut_1": 1, "m.x_f__mutmut_2": None, "m.x_f__mutmut_3": None, "m.x_g__mutmut_1": None})):
        (tmp_path / root / "mutants").mkdir(parents=True)
        (tmp_path / root / "mutants" / "m.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    res = {}
    for root in ("a", "b"):
        mr.merge(res, mr.results(tmp_path / root))
    assert res["m"] == {"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "not checked", "m.x_f__mutmut_3": "not checked",
                        "m.x_g__mutmut_1": "survived"}      # f changed (2 -> 3 mutants): b's; g unchanged: a's result stands
