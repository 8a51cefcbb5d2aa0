"""The pieces of experiment/distributed.py, checked on N processes (tests/test_distributed.py):

    mpiexec -n 2 python tests/distributed_checks.py [--device gpu]

Every process computes what it needs for the whole batch by itself (one process's answer), then
the distributed way on its own share, and compares: the dealt rows and draws, the averaged
gradient (ONE Allreduce), synchronised batch norm (forward, backward, running statistics), the
dealt dropout masks, whole_batch, mean_of and any_of. Prints "ok" on rank 0 and exits 0, or
stops every process (MPI_Abort) at the first difference, naming it.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nn  # noqa: E402
import nn.functional as F  # noqa: E402
from experiment import distributed  # noqa: E402


def check(name, ok):
    if not ok:
        distributed.stop(f"distributed_checks: {name} differs from one process's", 1)


def close(a, b, tol=2e-6):
    a, b = nn.backend.to_numpy(a), nn.backend.to_numpy(b)
    return a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol)


def main(device):
    distributed.connect()
    rank, n = distributed.rank, distributed.size
    check("the number of processes (run under mpiexec -n 2 or more)", n > 1)
    xp = nn.backend.array_module_for(device)
    if device == "gpu":
        distributed.use_local_gpu()
    batch = 4 * n                                   # the global batch; each process takes 4

    # the share and the draws: rows rank, rank + n, ... of the one-process values
    rows = np.arange(batch * 3).reshape(batch, 3)
    check("deal", np.array_equal(distributed.deal(rows), rows[rank::n]))
    whole, dealt = np.random.default_rng(7), distributed.dealing(np.random.default_rng(7))
    for draw in (lambda g, b: g.standard_normal((b, 2)), lambda g, b: g.uniform(),
                 lambda g, b: g.integers(0, 9, size=b), lambda g, b: g.uniform(size=(b, 1, 1)),
                 lambda g, b: g.integers(1, 6)):
        one, mine = draw(whole, batch), draw(dealt, 4)
        check("a dealt draw", np.array_equal(mine, one if np.ndim(one) == 0 else one[rank::n]))
    check("the generators' states", whole.bit_generator.state == dealt.bit_generator.state)

    # the gradient average: the mean of the shares' gradients is the whole batch's gradient
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 5)).astype(np.float32)
    layer = nn.Linear(5, 3).to(device)
    for p in layer.parameters():                    # the same weights everywhere
        p.data[...] = xp.asarray(np.random.default_rng(2).standard_normal(p.shape), np.float32)
    loss = (lambda y: (y * y).mean())
    loss(layer(nn.Tensor(xp.asarray(x)))).backward()
    expected = [p.grad.data.copy() for p in layer.parameters()]
    for p in layer.parameters():
        p.grad = None
    loss(layer(nn.Tensor(xp.asarray(distributed.deal(x))))).backward()
    distributed.average_gradients(list(layer.parameters()))
    check("ONE Allreduce per average", distributed.traffic["gradients"]["calls"] == 1)
    for p, want in zip(layer.parameters(), expected):
        check("the averaged gradient", close(p.grad.data, want))

    # synchronised batch norm: forward, gradients and running statistics of the whole batch
    images = rng.standard_normal((batch, 3, 4, 4)).astype(np.float32) * 2 + 1
    upstream = rng.standard_normal(images.shape).astype(np.float32)

    def norm_pass(x_in, g_in, all_sum):
        norm = nn.BatchNorm2d(3).to(device)
        norm.weight.data[...] = xp.asarray([1.5, -0.5, 2.0], dtype=np.float32)
        norm.all_sum = all_sum
        x_t = nn.Tensor(xp.asarray(x_in), requires_grad=True)
        y = norm(x_t)
        (y * nn.Tensor(xp.asarray(g_in))).sum().backward()
        return y.data, x_t.grad.data, norm.weight.grad.data, norm.bias.grad.data, norm.running_var.data
    y1, gx1, gw1, gb1, var1 = norm_pass(images, upstream, None)
    y2, gx2, gw2, gb2, var2 = norm_pass(distributed.deal(images), distributed.deal(upstream),
                                        distributed.all_sum)
    check("synchronised batch norm's output", close(y2, distributed.deal(y1)))
    check("synchronised batch norm's input gradient", close(gx2, distributed.deal(gx1)))
    check("synchronised batch norm's running variance", close(var2, var1))
    check("synchronised batch norm's weight gradient", close(distributed.all_sum(gw2), gw1))
    check("synchronised batch norm's bias gradient", close(distributed.all_sum(gb2), gb1))

    # dropout masks: drawn for the whole batch, this process's rows (nn.init's shared generator)
    ones = nn.Tensor(xp.ones((batch, 6), dtype=np.float32))
    nn.manual_seed(3)
    one = F.dropout(ones, 0.5)
    nn.manual_seed(3)
    drop = nn.Dropout(0.5)
    distributed.replicate(drop)
    mine = drop(nn.Tensor(xp.ones((4, 6), dtype=np.float32)))
    check("the dealt dropout mask", close(mine.data, distributed.deal(one.data)))

    # whole_batch: every process's images, in the global order
    codes = np.arange(batch * 2).reshape(batch, 2) * 10
    flat = rows.reshape(batch * 3, 1).astype(np.float32)            # 3 rows per image
    got_flat, got_codes = distributed.whole_batch(
        xp.asarray(distributed.deal(flat.reshape(batch, 3)).reshape(-1, 1)),
        xp.asarray(distributed.deal(codes)), images=4)
    check("whole_batch", close(got_flat, flat) and close(got_codes, codes))

    check("mean_of", distributed.mean_of([float(rank), 1.0]) == [(n - 1) / 2, 1.0])
    check("any_of", distributed.any_of(rank == n - 1) and not distributed.any_of(False))
    if rank == 0:
        print("ok", flush=True)


if __name__ == "__main__":
    main("gpu" if "--device" in sys.argv and sys.argv[-1] == "gpu" else "cpu")
