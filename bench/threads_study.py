"""Where a DEQ speed-up comes from: the batch-cost curve of the shipped UNet and DEQ / sequential wall time, per number
of CPU threads.

    python bench/threads_study.py --record             # threads 1 … os.cpu_count(), 3 alternating runs: a few minutes

For every thread count a fresh Python process (`torch.set_num_threads(n)`, OMP_NUM_THREADS = MKL_NUM_THREADS = n, set
before torch is imported) measures, on the digits UNet in float32:

- the seconds of one model call on a batch of n states, n in --sizes (median of --repeats calls after one warm-up call;
  deq_ddim_nb.benchmark.batch_efficiency);
- for seeds 0 … --seeds-1 at T = --T, batch 1: c(1) and c(T) once more (median of 3 calls, right before the runs, so
  that a prediction R c(T) / (T c(1)) uses costs measured alongside them), sequential `ddim_sample` (median of 3 runs),
  and `deq_sample` with the DEQ-DDIM authors' Anderson (deq_ddim_nb.benchmark.authors_anderson, 15 rounds) and with its
  defaults (chain_newton), each run once, with its rounds.

The thread counts run one after the other, --runs times in alternation (1, 2, …, 1, 2, …), so that a load on the machine
that comes and goes touches every count; every number kept is the median over the runs. The share of idle CPU time
and the one-minute load average before every run are recorded too: other programs that use the CPU meanwhile slow the
wider runs most: `--wait-idle 0.9` waits for a quiet machine before every run; on a machine that others keep busy, raise
the run's scheduling priority (where the kernel groups processes by session, the session's: as root,
`echo -15 > /proc/<pid>/autogroup`), which the file records.
Writes threads_study.json into --out (default: the user's cache folder), or with --record into the package's recorded
results (replacing it only with --force).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZES = (1, 2, 4, 8, 16, 32, 64, 100, 128, 256)
SOLVERS = ("anderson-authors", "chain_newton")


def worker(threads: int, sizes, T: int, seeds: int, repeats: int) -> dict:
    "Everything one process measures with `threads` threads (run in a fresh process: thread pools are set at start-up)."
    import warnings
    import torch
    torch.set_num_threads(threads)
    from deq_ddim_nb.benchmark import authors_anderson, batch_efficiency
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.deq import deq_sample
    from deq_ddim_nb.models import load_model
    from deq_ddim_nb.schedules import DDIMSchedule
    model = load_model("digits")
    eff = batch_efficiency(model, sizes=tuple(sizes), repeats=repeats)
    sched = DDIMSchedule.from_config(T, model.config, dtype=torch.float32)
    runs = []
    for seed in range(seeds):
        x_T = torch.randn((1, *model.config["sample_shape"]), generator=torch.Generator().manual_seed(seed))
        local = {e["batch"]: e["seconds"] for e in batch_efficiency(model, sizes=(1, T), repeats=3)}   # c(1), c(T) right now
        with torch.no_grad():
            seq = []
            for _ in range(3):
                t0 = time.perf_counter(); ddim_sample(model, x_T, sched); seq.append(time.perf_counter() - t0)
            row = dict(seed=seed, ddim_seconds=statistics.median(seq), c1_seconds=local[1], cT_seconds=local[T])
            for name, kw in (("anderson-authors", dict(solver=authors_anderson, max_iter=15)), ("chain_newton", {})):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter(); _, info = deq_sample(model, x_T, sched, **kw); sec = time.perf_counter() - t0
                row[name] = dict(seconds=sec, rounds=info.rounds)
        runs.append(row)
    return dict(threads=threads, torch_threads=torch.get_num_threads(), call_seconds={str(e["batch"]): e["seconds"] for e in eff},
                runs=runs)


def idle_share(seconds: float = 1.0) -> float:
    "Share of all CPUs' time that was idle over the next `seconds` (from /proc/stat; NaN where there is none)."
    def read():
        with open("/proc/stat") as fh: v = [int(x) for x in fh.readline().split()[1:]]
        return v[3] + v[4], sum(v)                                       # idle + iowait, total
    try:
        i0, t0 = read(); time.sleep(seconds); i1, t1 = read()
    except (OSError, ValueError, IndexError): return float("nan")
    return (i1 - i0) / max(t1 - t0, 1)


def autogroup() -> str | None:
    "This process's scheduling group and its nice value (Linux autogroups), or None where there is none."
    try:
        with open("/proc/self/autogroup") as fh: return fh.read().strip()
    except OSError: return None


def wait_for_idle(share: float, limit: float) -> float:
    "Wait (at most `limit` seconds) until at least `share` of the CPUs is idle; returns the last idle share seen."
    t0, idle = time.perf_counter(), idle_share()
    while idle == idle and idle < share and time.perf_counter() - t0 < limit: idle = idle_share(2.0)
    return idle


def run_worker(threads: int, a) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", str(threads), "--T", str(a.T), "--seeds", str(a.seeds),
           "--repeats", str(a.repeats), "--sizes", *map(str, a.sizes)]
    idle = wait_for_idle(a.wait_idle, a.wait_limit)
    load = os.getloadavg()[0]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["load_before"], out["idle_before"] = load, idle
    return out


def summarize(results: list, sizes, T: int) -> dict:
    "Medians over the runs of every thread count: call seconds per size, DDIM and DEQ seconds, DEQ / DDIM per solver."
    med = statistics.median
    by = {}
    for r in results: by.setdefault(r["threads"], []).append(r)
    out = {}
    for n, rs in sorted(by.items()):
        calls = {str(s): med([r["call_seconds"][str(s)] for r in rs]) for s in sizes}
        ddim = med([x["ddim_seconds"] for r in rs for x in r["runs"]])
        deq = {}
        for name in SOLVERS:
            sec = med([x[name]["seconds"] for r in rs for x in r["runs"]])
            ratio = med([x[name]["seconds"] / x["ddim_seconds"] for r in rs for x in r["runs"]])
            rounds = med([x[name]["rounds"] for r in rs for x in r["runs"]])
            deq[name] = dict(seconds=sec, rounds=rounds, ratio=ratio)
        local = med([x["cT_seconds"] / x["c1_seconds"] for r in rs for x in r["runs"]])
        out[str(n)] = dict(call_seconds=calls, ddim_seconds=ddim, deq=deq, runs=len(rs), batch_T_over_1_alongside=local,
                           load_before=[r["load_before"] for r in rs], idle_before=[r["idle_before"] for r in rs],
                           batch_T_over_1=calls[str(T)] / calls["1"] if str(T) in calls else None)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1 … os.cpu_count())")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="batch sizes of the cost curve (must include 1 and T)")
    p.add_argument("--T", type=int, default=100, help="chain length of the DEQ / sequential comparison")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 … N-1 of the DEQ / sequential comparison")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per batch size")
    p.add_argument("--runs", type=int, default=3, help="alternating runs of every thread count")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SHARE",
                   help="before every run, wait until this share of the CPUs is idle (e.g. 0.9)")
    p.add_argument("--wait-limit", type=float, default=600, metavar="SECONDS", help="the longest wait for --wait-idle")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    from _results import Results, add_output_args                      # bench/'s shared output options
    add_output_args(p)
    a = p.parse_args(argv)
    if a.worker is not None:
        print(json.dumps(worker(a.worker, a.sizes, a.T, a.seeds, a.repeats)))
        return 0
    if 1 not in a.sizes or a.T not in a.sizes: p.error(f"--sizes must include 1 and T = {a.T}")
    res = Results(p, a, ["threads_study.json"])                          # checked before any work
    threads = a.threads or list(range(1, (os.cpu_count() or 1) + 1))
    results, t0 = [], time.perf_counter()
    for k in range(a.runs):
        for n in threads:
            r = run_worker(n, a)
            results.append(r)
            c = r["call_seconds"]
            print(f"run {k + 1}/{a.runs}, {n} thread(s) (idle {100 * r['idle_before']:.0f}%, load {r['load_before']:.2f}): c({a.T}) / c(1) = "
                  f"{c[str(a.T)] / c['1']:.1f}; " + ", ".join(
                      f"{s} DEQ/DDIM {statistics.median(x[s]['seconds'] / x['ddim_seconds'] for x in r['runs']):.2f}"
                      for s in SOLVERS), flush=True)
    import torch
    summary = dict(model="digits", dtype="float32", T=a.T, batch=1, seeds=a.seeds, sizes=a.sizes, repeats=a.repeats,
                   cpu_count=os.cpu_count(), niceness=os.nice(0), autogroup=autogroup(), torch=torch.__version__, threads=summarize(results, a.sizes, a.T), raw=results)
    path = res.publish({"threads_study.json": json.dumps(summary, indent=1) + "\n"})[0]
    for n, s in summary["threads"].items():
        print(f"{n} thread(s): c({a.T})/c(1) = {s['batch_T_over_1']:.1f}, DDIM {s['ddim_seconds']:.2f} s, " +
              ", ".join(f"{k} {v['rounds']:g} rounds, DEQ/DDIM {v['ratio']:.2f}" for k, v in s["deq"].items()))
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
