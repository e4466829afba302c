"""DEQ-DDIM vs sequential DDIM: rounds and model evaluations to 1e-3 of the sequential sample, wall time side by side.

    OMP_NUM_THREADS=1 python bench/benchmark.py            # the default grid (about 20 minutes on 2 CPU cores)
    python bench/benchmark.py --quick --out /tmp/bench     # a few seconds
    python bench/benchmark.py --report-only                # rebuild speed.md and the plots from bench/results/speed.csv

Writes bench/results/{speed.csv, speed.md, speed_traces.json, efficiency.csv, speed_rounds.png, speed_traces.png, efficiency.png}.
The code lives in deq_ddim_nb.parallel (notebook nbs/09_parallel.ipynb); this file only calls it.
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

if __name__ == "__main__":
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from deq_ddim_nb.parallel import bench_main
    sys.exit(bench_main())
