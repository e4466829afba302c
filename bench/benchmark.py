"""DEQ-DDIM vs sequential DDIM: rounds, model evaluations, x_0 error and wall time of every sampler on the same x_T.

This is `deq-ddim bench` (the same entry point, the same options and exit codes):

    python bench/benchmark.py --out /tmp/bench                # the quick grid into /tmp/bench (a few minutes on one core)
    python bench/benchmark.py --quick --out /tmp/bench         # a tiny grid, seconds
    python bench/benchmark.py --full --out /tmp/bench          # every variant, T = 10 … 1000 (tens of minutes)
    python bench/benchmark.py --report-only --out /tmp/bench --force   # rebuild speed.md and the plots from speed.csv
    python bench/benchmark.py --record --force                 # the quick grid into the package's recorded results

Without --out it writes to $XDG_CACHE_HOME/deq-ddim-nb/bench (~/.cache/deq-ddim-nb/bench). The code lives in
deq_ddim_nb.benchmark (notebook nbs/92_benchmark.ipynb) and deq_ddim_nb.cli (nbs/11_cli.ipynb).
"""
import sys

if __name__ == "__main__":
    from deq_ddim_nb.cli import main
    sys.exit(main(["bench", *sys.argv[1:]]))
