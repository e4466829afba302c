"""DEQ-DDIM vs sequential DDIM: rounds, model evaluations, x_0 error and wall time of every sampler on the same x_T.

    OMP_NUM_THREADS=1 python bench/benchmark.py            # the quick grid, the shipped table (a few minutes on one core)
    python bench/benchmark.py --full                      # every variant, T = 10 … 1000 (tens of minutes)
    python bench/benchmark.py --quick --out /tmp/bench     # a few seconds
    python bench/benchmark.py --report-only                # rebuild speed.md and the plots from bench/results/speed.csv

Writes bench/results/{speed.csv, speed.md, speed_traces.json, efficiency.csv, speed_rounds.png, speed_traces.png, efficiency.png}.
The code lives in deq_ddim_nb.benchmark (notebook nbs/92_benchmark.ipynb); this file only calls it.
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

if __name__ == "__main__":
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from deq_ddim_nb.benchmark import bench_main
    sys.exit(bench_main())
