"""torch.distributed check: DEQ sampling with the model call split across ranks equals the single-process result.

    OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node=2 bench/torchrun_check.py [--model digits|toy] [--T 20]

gloo on CPU, NCCL with --device cuda (one GPU per rank). Every rank runs the identical solver loop; each evaluates a
contiguous slice of the T·B states of a round and the ε's are all-gathered (deq_ddim_nb.distributed.DistributedEps).
Also checks sample_images: images split across ranks (gathered, and written per rank) equal the single-process ones.
Prints a table on rank 0; exit status 0 when every relative difference is <= --tol (1e-6), else 1.
A single round agrees to float32 rounding (~1e-7) for any split. Over a whole float32 solve that rounding can grow
(to ~1e-5 when a slice's size makes the CPU pick another GEMM blocking than the whole call, e.g. T=12, batch 2);
at the default T=20, batch 2 both paths run the same kernels and agree exactly, and the float64 solve must agree to
rounding for any T.
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
import torch.distributed as dist


def rel(a, b):
    return float(torch.linalg.vector_norm((a - b).double()) / torch.linalg.vector_norm(b.double()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="digits", choices=("digits", "toy"))
    p.add_argument("--T", type=int, default=20)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8, help="max rounds of the DEQ solver")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, device = local rank)")
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--tol-window", type=float, default=1e-4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from deq_ddim_nb.schedules import DDIMSchedule
    from deq_ddim_nb.ddim import ddim_sample
    from deq_ddim_nb.deq import deq_map, deq_sample
    from deq_ddim_nb.distributed import DistributedEps, dist_info, image_inputs, load_image_shards, sample_images
    from deq_ddim_nb.parallel import window_sample

    cuda = args.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist_info()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if cuda else torch.device("cpu")
    if cuda: torch.cuda.set_device(device)
    from deq_ddim_nb.models import load_model
    if args.model == "digits":
        model = load_model("digits", device=device)
    else:
        from deq_ddim_nb.toy import digits_eps
        model = digits_eps(8).to(device=device, dtype=torch.float32)
    sched = DDIMSchedule.from_config(args.T, model.config, dtype=torch.float32)
    dmodel = DistributedEps(model)
    x_T = torch.randn((args.batch, *model.config["sample_shape"]), generator=torch.Generator().manual_seed(0)).to(device)
    checks = {}
    with torch.no_grad():
        xs = torch.randn((args.T, *x_T.shape), generator=torch.Generator().manual_seed(1)).to(device)
        checks["deq_map (one round)"] = rel(deq_map(dmodel, xs, x_T, sched), deq_map(model, xs, x_T, sched))
        x0_1, info_1 = deq_sample(model, x_T, sched, max_iter=args.rounds)
        x0_d, info_d = deq_sample(dmodel, x_T, sched, max_iter=args.rounds)
        checks[f"deq_sample x_0 ({info_d.rounds} rounds)"] = rel(x0_d, x0_1)
        # the window's calls shrink round by round; a slice of an odd-sized call may take another CPU kernel than
        # the whole call, so equality here is up to float32 rounding amplified by the chain (checked to --tol-window)
        # float64: no rounding to amplify, so any T and any split must agree to 1e-12 over a whole solve
        model64 = model.to(torch.float64) if args.model == "toy" else load_model("digits", device=device, dtype=torch.float64)
        s64, x64 = DDIMSchedule.from_config(args.T, model.config), x_T.double()
        checks["deq_sample x_0, float64"] = rel(deq_sample(DistributedEps(model64), x64, s64, max_iter=args.rounds)[0],
                                                deq_sample(model64, x64, s64, max_iter=args.rounds)[0])
        w1, _ = window_sample(model, x_T, sched)
        wd, _ = window_sample(dmodel, x_T, sched)
        loose = {"window_sample x_0 (rounding only)": rel(wd, w1)}
        # every rank ends with the same x_0
        allx = [torch.empty_like(x0_d) for _ in range(world)]
        dist.all_gather(allx, x0_d)
        checks["x_0 equal on all ranks"] = max(rel(a, allx[0]) for a in allx)
        # images split across ranks (gathered, and written per rank); the reference samples the same batches in one process
        n, bs = 2 * world, 2
        x_all, _ = image_inputs(range(n), model.config["sample_shape"], seed=5, device=device)
        ref = torch.cat([ddim_sample(model, x_all[i:i + bs], sched) for i in range(0, n, bs)])
        with tempfile.TemporaryDirectory() as tmp:
            shared = [tmp]
            dist.broadcast_object_list(shared, src=0)                     # rank 0's directory for everyone
            got = sample_images(model, sched, n, batch_size=bs, sampler="ddim", seed=5, device=device, out_dir=shared[0])
            checks[f"sample_images, {n} images gathered"] = rel(got, ref)
            dist.barrier()
            if rank == 0: checks[f"sample_images, {n} images from {world} files"] = rel(load_image_shards(shared[0]).to(device), ref)
            dist.barrier()
    worst = torch.tensor([max(checks.values())], dtype=torch.float64, device=device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    worst_loose = max(loose.values())
    ok = float(worst) <= args.tol and worst_loose <= args.tol_window
    if rank == 0:
        print(f"torchrun check: {world} ranks, backend {dist.get_backend()}, model {args.model}, T={args.T}, batch {args.batch}, float32")
        print(f"{'check':45s} {'rel. difference':>16s}")
        for k, v in checks.items(): print(f"{k:45s} {v:16.2e}")
        for k, v in loose.items(): print(f"{k:45s} {v:16.2e}   (tolerance {args.tol_window:g})")
        print(("OK" if ok else "FAIL") + f": worst relative difference {float(worst):.2e} (tolerance {args.tol:g})")
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
