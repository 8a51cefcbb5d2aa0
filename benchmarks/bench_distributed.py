"""Data-parallel training on one machine: seconds per step of each script at its default sizes,
1 process (1 and 2 BLAS threads) against `mpiexec -n 2` processes of 1 BLAS thread each, with the
bytes all-reduced per step and the share of the step spent in the all-reduce (benchmarks/README.md).

    python benchmarks/bench_distributed.py                  # all four, mpiexec beside python
    python benchmarks/bench_distributed.py --scripts dcgan --steps 20 --mpiexec /usr/bin/mpiexec

Each measurement is a real run of the script (tiny --samples, so the final scores are skipped) in a
temporary folder. The time of a step is taken between two consecutive Run.record calls of rank 0
(the step, its all-reduce and the bookkeeping), over the last --steps steps (StyleGAN's are at its
final 64x64); the all-reduce time is what rank 0 spent inside MPI calls in those steps
(distributed.traffic), waiting for the other process included. Needs requirements-distributed.txt.
"""
import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SCRIPTS = {   # name: (script, flags of the measured run, flags of a run before it in the same folder)
    "dcgan": ("train_dcgan.py", ["--samples", "4"], None),
    "vqvae": ("train_vqvae.py", ["--stage", "vqvae"], None),
    "prior": ("train_vqvae.py", ["--stage", "prior", "--prior-epochs", "2", "--augment-copies", "1",
                                 "--samples", "4"],
              ["--stage", "vqvae", "--epochs", "1"]),
    "stylegan": ("train_stylegan.py", ["--phase-images", "16,16,16", "--fade-images", "16",
                                       "--samples", "4", "--curve-every", "0"], None),
}
SETUPS = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
          ("2 processes, 1 thread each", 2, 1)]


def worker(script, result, flags):
    """Run `script` with `flags` in this process, noting the time and the MPI traffic at every
    Run.record; rank 0 writes them to `result` (JSON)."""
    import experiment.run
    from experiment import distributed
    marks = []
    record = experiment.run.Run.record

    def noted(self, step, **values):
        record(self, step, **values)
        marks.append((step, time.perf_counter(), json.loads(json.dumps(distributed.traffic))))
    experiment.run.Run.record = noted
    sys.argv = [script] + flags
    try:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    except SystemExit as end:
        if end.code:
            raise
    if distributed.rank == 0:
        with open(result, "w") as f:
            json.dump(marks, f)


def measure(name, processes, threads, steps, mpiexec, extra):
    """(seconds per step, {kind: bytes per step}, all-reduce seconds per step) of one setup."""
    script, flags, before = SCRIPTS[name]
    folder = tempfile.mkdtemp(prefix="bench-distributed-")
    out, result = os.path.join(folder, "run"), os.path.join(folder, "marks.json")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    sizes = ["--steps-per-epoch", str(steps + 4), "--epochs", "1", "--out", out, *extra]
    try:
        if before:
            subprocess.run([sys.executable, os.path.join(ROOT, script), *sizes, *before], env=env,
                           cwd=ROOT, check=True, capture_output=True)
        launcher = [mpiexec, "-n", str(processes)] if processes > 1 else []
        done = subprocess.run([*launcher, sys.executable, os.path.abspath(__file__), "--worker",
                               script, result, *sizes, *flags], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name} on {processes} processes failed:\n{done.stderr[-2000:]}")
        with open(result) as f:
            marks = json.load(f)[-(steps + 1):]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    (_, started, first), (_, ended, last) = marks[0], marks[-1]
    per_step = (ended - started) / steps
    sent = {kind: (last[kind]["bytes"] - first.get(kind, {}).get("bytes", 0)) / steps
            for kind in last}
    waiting = sum(last[kind]["seconds"] - first.get(kind, {}).get("seconds", 0.0)
                  for kind in last) / steps
    return per_step, sent, waiting


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scripts", default=",".join(SCRIPTS), help="comma list of " + ", ".join(SCRIPTS))
    p.add_argument("--steps", type=int, default=10, help="steps measured per run (default 10)")
    p.add_argument("--mpiexec", default=shutil.which("mpiexec", path=os.path.dirname(sys.executable))
                   or shutil.which("mpiexec"), help="the MPI launcher (default: beside python)")
    p.add_argument("--sync-batchnorm", action="store_true", help="pass --sync-batchnorm too")
    args = p.parse_args()
    from benchmarks.machine import header
    print(header(), "(BLAS threads: per setup below)")
    extra = ["--sync-batchnorm"] if args.sync_batchnorm else []
    print(f"\n| script | " + " | ".join(label for label, _, _ in SETUPS) +
          " | speed-up over 1 process of 2 threads, of 1 | sent per step | in MPI calls |")
    print("|---" * (len(SETUPS) + 4) + "|")
    for name in args.scripts.split(","):
        results = [measure(name, n, threads, args.steps, args.mpiexec, extra)
                   for _, n, threads in SETUPS]
        times = [r[0] for r in results]
        per_step, sent, waiting = results[-1]
        amounts = ", ".join(f"{kind} {value / 1024:.0f} KiB" for kind, value in sent.items())
        print(f"| {name} | " + " | ".join(f"{t:.3f} s" for t in times) +
              f" | {times[1] / times[2]:.2f}x, {times[0] / times[2]:.2f}x | {amounts} | "
              f"{waiting / per_step:.1%} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
