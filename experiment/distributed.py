"""Data-parallel training over MPI: the same script on N processes trains ONE model.

    mpiexec -n 2 python train_dcgan.py --batch-size 32     # 2 processes, 16 images each
    srun -n 8 --kill-on-bad-exit=1 python train_stylegan.py --device gpu --batch-size 64

Every process runs the whole script with the same flags and holds the same model. At each step
every process takes its share of ONE global batch (--batch-size images), computes the loss of its
share and the gradients, and the processes AVERAGE their gradients, so every one of them takes the
same optimizer step and the models stay equal. Why the average is the right gradient: split the
global batch B into N equal shares S_r of b = B / N images; the loss of the batch is the mean of
the shares' losses, and the gradient is linear,

    L = 1/B sum_{i in B} l_i = 1/N sum_r ( 1/b sum_{i in S_r} l_i ) = 1/N sum_r L_r
    grad L = 1/N sum_r grad L_r

so process r computes grad L_r, ONE MPI Allreduce sums the N gradients (every process receives
the sum), and dividing by N gives each process grad L: the gradient one process computes on the
whole batch. What is here, in the order a run meets it:

    connect()             experiment.start calls it first. Under mpiexec or srun (LAUNCHERS: the
                          variables they set) it imports mpi4py and learns `rank` (0..size-1) and
                          `size`; otherwise it does nothing: size stays 1 and mpi4py is never
                          imported, and every helper below returns what it was given.
    agreeing()            the flag checks: every process finds the same refusals, rank 0 says them
    use_local_gpu()       --device gpu: process r uses GPU (local rank r) of its machine
    deal(rows)            this process's share of a global batch: rows rank, rank + size, ...
                          (the batch dealt like cards; experiment.stream deals each batch)
    dealing(generator)    the same generator, but a draw of `size` rows is drawn for the global
                          batch (size x N rows) and dealt: random numbers do not depend on N
    replicate(*models)    rank 0's weights broadcast to every process (at start and on resume),
                          Dropout masks dealt, and with --sync-batchnorm synchronised BatchNorm
    averaging(optimizer)  the optimizer, whose step() first averages the gradients over the
                          processes: ONE Allreduce of ONE flat buffer per step (average_gradients)
    whole_batch(...)      every process's rows of a batch in the global order (VQ-VAE's codebook)
    mean_of(numbers)      the logged values averaged over the processes (Run.read)
    any_of(flag)          Ctrl-C seen by any process: every process stops at the same step
    scratch_folder()      the Run's folder on ranks other than 0 (see "Who writes" below)
    stop(...)             an error: one line from rank 0, or MPI_Abort when one process alone fails

Randomness does not depend on N. Everything random in a step (the batch's images and their
augmentation, latents, noise, dropout masks, penalty interpolation) is drawn for the GLOBAL batch
from the run's seeded generators, which every process holds in the same state, and each process
keeps its own rows. Its share is dealt like cards, rows rank, rank + N, rank + 2N, ..., rather than
cut in blocks, because StyleGAN's minibatch standard deviation groups images the same way (image
n in group n mod B/G, nn/functional.py): with a local batch that is a multiple of the group size
G (4), each process's groups are exactly the groups of the one-process batch.

What is and is not synchronised. Gradients (averaged each optimizer step) and therefore weights
and optimizer states (equal everywhere; broadcast from rank 0 at start and resume). BatchNorm:
each process normalises its share with its own statistics by default, as PyTorch's
DistributedDataParallel does (the running averages of rank 0 are the ones saved); with
--sync-batchnorm the mean and variance are those of the global batch (all-reduced, and in the
backward the two sums it needs too), which makes N processes compute what one does. StyleGAN's
minibatch standard deviation keeps its groups within a process (see above). The VQ-VAE's EMA
codebook and dead-code restarts see every process's encoder outputs (whole_batch). The logged
values are the mean over the processes (a mean loss: the global batch's loss).

Who writes. Every process runs every line of the script, the pictures and the final scores too
(they take as long on every process, so the others would only wait for rank 0). Rank 0's Run
writes to --out; every other process's Run writes to a private temporary folder that is removed
when it exits (scratch_folder), so nothing but rank 0 reaches --out and no line of the scripts
needs to know which process it runs in (the price: each process also writes its pictures and
checkpoints there, once an epoch). Only rank 0 locks --out, prints, and writes the image
cache (rank_zero_first); the others print nothing (their standard output goes to /dev/null).

When a process dies (killed, out of memory, a node lost), the MPI launcher ends the others at once
and says which one (mpiexec: "BAD TERMINATION ... Killed"; with srun give --kill-on-bad-exit=1);
the checkpoint is written atomically by rank 0, so the last one is intact and --resume continues,
with the same or another number of processes. An error that one process meets alone stops every
process through MPI_Abort (stop); an error that every process meets alike (a flag refused in
agreeing, a nan loss in the averaged values, Ctrl-C) is said once by rank 0.

GPUs: one per process. CuPy arrays go to mpi4py directly where the MPI library is CUDA-aware
(MPIX_Query_cuda_support, or BRAINGEN_CUDA_AWARE_MPI=1/0 to say so), else through the host.
"""
import atexit
import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import nn
from nn.backend import get_array_module, is_cupy_array, to_numpy

# The environment variables each launcher sets in the processes it starts; any one of them means
# "started by an MPI launcher" (a plain `python train_dcgan.py` has none of them).
LAUNCHERS = {
    "OMPI_COMM_WORLD_SIZE": "Open MPI's mpiexec",
    "PMI_SIZE": "MPICH's mpiexec (Hydra), Intel MPI, srun --mpi=pmi2",
    "PMIX_RANK": "PMIx: Open MPI 5, srun --mpi=pmix",
    "MPI_LOCALRANKID": "Hydra (MPICH, Intel MPI)",
}
CUDA_AWARE_VARIABLE = "BRAINGEN_CUDA_AWARE_MPI"

rank, size = 0, 1        # this process's number and how many processes run (1: no MPI)
comm = None              # mpi4py's MPI.COMM_WORLD once connected with size > 1
MPI = None               # the mpi4py.MPI module, likewise
cuda_aware = False       # CuPy arrays go to MPI directly (True) or through the host
library = ""             # the MPI library's name and version, for the log
traffic = {}             # kind -> {"calls", "bytes", "seconds"}: what this process sent (measured)
_scratch = None


# ---- connecting -------------------------------------------------------------------------------

def launched():
    """The name of the variable that says an MPI launcher started this process, or None."""
    return next((name for name in LAUNCHERS if name in os.environ), None)


def connect():
    """Join the other processes when an MPI launcher started this one (else do nothing). Every
    process but rank 0 is silenced (its standard output goes to /dev/null), and an exception that
    no one catches aborts them all (instead of leaving the others waiting for it forever)."""
    global rank, size, comm, MPI, cuda_aware, library
    variable = launched()
    if variable is None or comm is not None:
        return
    try:
        from mpi4py import MPI as mpi
    except ImportError:
        raise SystemExit(f"error: this process was started by an MPI launcher ({variable} is set) "
                         "but mpi4py is not installed: pip install -r requirements-distributed.txt")
    world = mpi.COMM_WORLD
    if world.Get_size() == 1:              # `mpiexec -n 1`: one process, as without mpiexec
        return
    MPI, comm, rank, size = mpi, world, world.Get_rank(), world.Get_size()
    library = " ".join(mpi.Get_library_version().splitlines()[0].split())   # "MPICH Version: 5.0.2"
    cuda_aware = _cuda_aware()
    if rank != 0:
        sys.stdout = open(os.devnull, "w")
    uncaught = sys.excepthook

    def abort_all(kind, value, traceback):   # a bug on one process: show it, stop every process
        uncaught(kind, value, traceback)
        comm.Abort(1)
    sys.excepthook = abort_all


def _cuda_aware():
    """Can MPI read and write GPU memory? BRAINGEN_CUDA_AWARE_MPI=1 or 0 says so; otherwise ask
    the MPI library itself (MPIX_Query_cuda_support, in Open MPI and MPICH), found among the
    libraries this process has loaded."""
    said = os.environ.get(CUDA_AWARE_VARIABLE)
    if said in ("0", "1"):
        return said == "1"
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libmpi" in line}
        for path in sorted(paths):
            query = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
            if query is not None:
                return bool(query())
    except OSError:
        pass
    return False


def describe(device="cpu", sync_batchnorm=False):
    """One line for the log: how the processes share the work."""
    norms = "synchronised" if sync_batchnorm else "per process"
    line = f"data-parallel: {size} processes ({library}); batch norm statistics {norms}"
    if device == "gpu":
        how = "directly (CUDA-aware MPI)" if cuda_aware else "through the host (MPI is not CUDA-aware)"
        line += f"; one GPU per process, arrays to MPI {how}"
    return line


@contextlib.contextmanager
def agreeing():
    """Around the flag checks of experiment.start: each process checks its flags, then they agree.
    When any process refused something, every process raises the refusal of the lowest rank that
    found one (the same one, as the flags are the same), marked `everywhere`, so that rank 0 alone
    says it and all of them exit with its code; none writes anything."""
    found = None
    try:
        yield
    except Exception as error:                    # an ExperimentError, a DataError, ...
        if comm is None:
            raise
        found = error
    if comm is None:
        return
    reports = comm.allgather(None if found is None else (str(found), getattr(found, "code", 1)))
    first = next(((r, report) for r, report in enumerate(reports) if report), None)
    if first is None:
        return
    if found is None or first[0] != rank:
        from .errors import ExperimentError
        where, (message, code) = first
        found = ExperimentError(message if where == 0 else f"rank {where}: {message}", code)
    found.everywhere = True
    raise found


def check_batches(config):
    """The global batch must split evenly: --batch-size (and the VQ-VAE's --prior-batch-size) a
    multiple of the number of processes. Raises SettingsError (the flag's one-line refusal)."""
    from settings.rules import SettingsError
    for name in ("batch_size", "prior_batch_size"):
        value = getattr(config, name, None)
        if value is not None and value % size:
            raise SettingsError(name, value, f"it is the global batch, split over {size} processes "
                                f"(mpiexec -n {size}); use a multiple of {size}")


def use_local_gpu():
    """--device gpu: process r uses GPU number (its rank among the processes of its machine)
    modulo the GPUs there, so 4 processes on a 4-GPU node take one GPU each. Returns its number."""
    import cupy
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank() if comm is not None else 0
    number = local % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(number).use()
    return number


def local_processes():
    """How many processes of this run share this machine (its memory)."""
    return comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size() if comm is not None else 1


# ---- the batch split and the random draws ---------------------------------------------------

def share():
    """(rank, size): which share of every batch this process takes (BatchLoader's `share`)."""
    return rank, size


def deal(rows, share=None):
    """This process's share of a global batch: rows rank, rank + N, rank + 2N, ... of the first
    axis (a contiguous copy), or `rows` itself when one process runs. share: (rank, N), this
    process's by default."""
    mine, processes = share or (rank, size)
    if processes == 1:
        return rows
    return get_array_module(rows).ascontiguousarray(rows[mine::processes])


class Dealing(np.random.Generator):
    """A view of a NumPy Generator (the same bits, so the same state, saved and restored with it)
    for a process of a data-parallel run. A draw given a `size` is one value per image of the
    batch (its first axis runs over the images): it is drawn for the global batch, N times as
    many rows, and this process's rows are dealt. A draw without `size` (one number: a style-
    mixing coin, a crossover layer, a seed) is the same on every process. Either way every process
    draws the same numbers, so the generators stay equal everywhere, and equal to the generator
    of a one-process run. The draws the models use are dealt (standard_normal, random, uniform,
    normal, integers); nn.functional's dropout asks `for_global_batch` itself (on the GPU its
    masks come from cuRAND)."""

    def __init__(self, generator, share=None):
        super().__init__(generator.bit_generator)
        self.share = share or (rank, size)

    def for_global_batch(self, shape, draw):
        """draw(the global batch's shape) -> this process's rows of it."""
        rows, *rest = (shape,) if np.ndim(shape) == 0 else tuple(shape)
        return deal(draw((rows * self.share[1], *rest)), self.share)

    def _per_image(self, size, draw):
        return draw(None) if size is None else self.for_global_batch(size, draw)

    def standard_normal(self, size=None, dtype=np.float64):
        return self._per_image(size, lambda s: np.random.Generator.standard_normal(self, s, dtype))

    def random(self, size=None, dtype=np.float64):
        return self._per_image(size, lambda s: np.random.Generator.random(self, s, dtype))

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._per_image(size, lambda s: np.random.Generator.uniform(self, low, high, s))

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._per_image(size, lambda s: np.random.Generator.normal(self, loc, scale, s))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return self._per_image(size, lambda s: np.random.Generator.integers(
            self, low, high, s, dtype, endpoint))


def dealing(generator):
    """`generator` seen through Dealing in a data-parallel run; `generator` itself otherwise."""
    return generator if size == 1 else Dealing(generator)


# ---- the same model everywhere --------------------------------------------------------------

def replicate(*models, sync_batchnorm=False):
    """Make `models` the same model on every process; call it once the run has restored its
    state (run.restore), so it serves at start and on resume:

      - rank 0's parameters and buffers are broadcast to every process (one Bcast per array). The
        processes built them from the same seed and read the same checkpoint, so this changes
        nothing unless something differed; PyTorch's DistributedDataParallel does the same.
      - every Dropout draws its masks for the global batch and keeps this process's rows (its
        generator, or nn.init's shared one where it has none, seen through Dealing).
      - sync_batchnorm: every BatchNorm2d sums its statistics over the processes (`all_sum`).
    Optimizer states are not broadcast: every process loaded the same checkpoint. One process:
    nothing happens."""
    if size == 1:
        return
    for model in models:
        for tensor in [*model.parameters(), *model.buffers()]:
            _broadcast(tensor.data)
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.generator = Dealing(module.generator or nn.init.default_generator())
            if sync_batchnorm and isinstance(module, nn.BatchNorm2d):
                module.all_sum = all_sum


def _broadcast(array):
    """Rank 0's values of `array` into every process's `array`, in place."""
    if is_cupy_array(array) and not cuda_aware:
        host = array.get()
        comm.Bcast(host, root=0)
        array[...] = get_array_module(array).asarray(host)
    else:
        _wait_for_gpu(array)
        comm.Bcast(array, root=0)


# ---- the gradient all-reduce ------------------------------------------------------------------

class AveragedGradients:
    """An optimizer whose step() first replaces every gradient by its mean over the processes
    (average_gradients), then steps as the optimizer does. Everything else (param_groups,
    zero_grad, state_dict, load_state_dict) is the optimizer's own."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self):
        average_gradients([p for group in self.optimizer.param_groups for p in group["params"]
                           if p.grad is not None])
        self.optimizer.step()


def averaging(optimizer):
    """`optimizer` whose steps use the gradients averaged over the processes (AveragedGradients);
    `optimizer` itself when one process runs. Why a wrapper made where the optimizer is made:
    every optimizer of the run is marked in the script, where a reader sees it, and nn/optim.py
    needs no hook (nothing in nn/ knows that processes exist)."""
    return optimizer if size == 1 else AveragedGradients(optimizer)


def average_gradients(params):
    """grad <- 1/N sum over processes of grad, for every parameter in `params`, with ONE Allreduce:
    the gradients are copied into one flat buffer (one call costs the network's latency once,
    not once per parameter), summed in place over the processes, divided by N, and each
    parameter's gradient becomes its piece of the buffer."""
    if not params:
        return
    grads = [p.grad.data for p in params]
    if len({g.dtype for g in grads}) != 1:
        raise TypeError("average_gradients: the gradients have different dtypes "
                        f"{sorted({str(g.dtype) for g in grads})}; one flat buffer needs one")
    xp = get_array_module(grads[0])
    flat = xp.concatenate([g.reshape(-1) for g in grads])
    _sum_in_place(flat, "gradients")
    flat *= flat.dtype.type(1.0 / size)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = nn.Tensor(flat[offset:offset + g.size].reshape(g.shape))
        offset += g.size


def all_sum(array):
    """A new array: `array` summed over the processes (synchronised BatchNorm's statistics)."""
    total = array.copy()
    _sum_in_place(total, "batch norm")
    return total


def _sum_in_place(array, kind):
    """array <- the sum over the processes of array (MPI Allreduce, in place). A CuPy array goes
    through the host unless MPI is CUDA-aware. Counted in traffic[kind]."""
    started = time.perf_counter()
    if is_cupy_array(array) and not cuda_aware:
        host = array.get()
        comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        array[...] = get_array_module(array).asarray(host)
    else:
        _wait_for_gpu(array)
        comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
    _count(kind, array.nbytes, started)


def _count(kind, nbytes, started):
    """Add one call of `nbytes` that began at perf_counter() `started` to traffic[kind]."""
    entry = traffic.setdefault(kind, {"calls": 0, "bytes": 0, "seconds": 0.0})
    entry["calls"] += 1
    entry["bytes"] += int(nbytes)
    entry["seconds"] += time.perf_counter() - started


def _wait_for_gpu(array):
    """MPI reads GPU memory outside CuPy's stream: wait until the GPU has written `array`."""
    if is_cupy_array(array):
        get_array_module(array).cuda.get_current_stream().synchronize()


def whole_batch(*arrays, images):
    """Every process's rows of per-image arrays, in the order of the global batch: each array has
    `images` images' rows (k rows per image, e.g. a VQ-VAE's h x w code vectors each), and the
    result has N x `images` images' rows, image i of process r at its global place r + N i. Used
    where state depends on the whole batch (the VQ-VAE's EMA codebook and restarts). One process:
    the arrays as they are."""
    if size == 1:
        return arrays
    gathered = []
    for array in arrays:
        started, xp = time.perf_counter(), get_array_module(array)
        mine = array.reshape((images, -1) + array.shape[1:])      # (images, rows of each, ...)
        if is_cupy_array(mine) and not cuda_aware:
            mine = to_numpy(mine)
        _wait_for_gpu(mine)
        mine = get_array_module(mine).ascontiguousarray(mine)
        every = get_array_module(mine).empty((size,) + mine.shape, mine.dtype)
        comm.Allgather(mine, every)              # every[r]: process r's images
        _count("whole batch", every.nbytes, started)
        # image i of process r is image r + N i of the global batch: put the axes in order [i, r]
        every = xp.asarray(every).transpose((1, 0) + tuple(range(2, every.ndim)))
        gathered.append(xp.ascontiguousarray(every).reshape((-1,) + array.shape[1:]))
    return tuple(gathered)


# ---- the run's bookkeeping ----------------------------------------------------------------------

def mean_of(numbers):
    """Python floats averaged over the processes (one Allreduce), or `numbers` as they are."""
    if size == 1 or not numbers:
        return numbers
    values = np.asarray(numbers, dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
    return [float(v) for v in values / size]


def any_of(flag):
    """True on every process when `flag` is True on any (Ctrl-C seen by one process)."""
    if size == 1:
        return flag
    return bool(comm.allreduce(bool(flag), op=MPI.LOR))


def scratch_folder():
    """The private folder a process other than rank 0 writes its Run to, removed when it exits."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix=f"braingen-rank{rank}-")
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return _scratch


@contextlib.contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (e.g. decodes the images and writes their cache), then the
    others (which find the cache). The others wait politely: a Test every 10 ms, not a busy loop."""
    if size == 1:
        yield
        return
    if rank != 0:
        _wait(comm.Ibarrier())
    yield
    if rank == 0:
        _wait(comm.Ibarrier())


def _wait(request):
    while not request.Test():
        time.sleep(0.01)


def stop(message, code, everywhere=False):
    """End this process after an error. One process, or an error every process met alike
    (`everywhere`): rank 0 prints `message` and each process exits with `code`. An error of one
    process alone: it prints it (naming its rank) and calls MPI_Abort, which ends every process
    (the others would otherwise wait for it forever)."""
    if comm is None or everywhere:
        if rank == 0:
            print(message, file=sys.stderr)
        sys.exit(code)
    print(f"rank {rank} of {size}: {message}", file=sys.stderr, flush=True)
    comm.Abort(code)
