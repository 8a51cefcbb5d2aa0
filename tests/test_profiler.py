"""nn.profile: counts equal the calls made, times are attributed to the right op (checked with a
fake clock), the table adds up to the wall time, and the hooks are off outside the block."""
import numpy as np
import pytest

import nn
import nn.profiler
from nn.tensor import Function, topological_order


def chain(x, w, layers):
    """`layers` times y = exp(y * w) + x, then a sum: Mul, Exp and Add `layers` times, one Sum.
    (Use small w: the values grow quickly.)"""
    y = x
    for _ in range(layers):
        y = (y * w).exp() + x
    return y.sum()


def test_counts_equal_the_calls_made(rng):
    x = nn.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = nn.Tensor(0.1 * rng.standard_normal((3, 4)), requires_grad=True)
    with nn.profile() as prof:
        loss = chain(x, w, layers=4)
        loss.backward()
    counts = {row["op"]: (row["forward_calls"], row["backward_calls"]) for row in prof.rows}
    # Adds: the 4 of the graph, and those of the backward loop summing the gradients of a tensor
    # used more than once: x is used 5 times (the first Mul, 4 Adds), w 4 times: 4 + 3 more.
    assert counts == {"Mul": (4, 4), "Exp": (4, 4), "Add": (4 + 4 + 3, 4), "Sum": (1, 1)}
    assert sum(b for _, b in counts.values()) == len(topological_order([loss]))


def test_calls_inside_a_backward_count_toward_it(rng):
    """Mul.backward computes gy * b with a Mul: that call is part of Mul's backward time, not a
    forward call of its own. With create_graph those inner calls become nodes, whose backward
    calls are counted when the second backward walks them."""
    x = nn.Tensor(rng.standard_normal(5), requires_grad=True)
    with nn.profile() as prof:
        y = (x * x).sum()                      # Mul, Sum
        gx, = nn.grad(y, [x], create_graph=True)
    counts = {row["op"]: (row["forward_calls"], row["backward_calls"]) for row in prof.rows}
    assert counts == {"Mul": (1, 1), "Sum": (1, 1), "Add": (1, 0)}   # x's two gradients, added
    inner = {type(f).__name__ for f in topological_order([gx])}
    assert "Mul" in inner                     # made inside Mul.backward, yet not counted above
    with nn.profile() as prof:
        gx.sum().backward()
    walked = len(topological_order([gx.sum()]))
    assert {r["op"]: r["forward_calls"] for r in prof.rows if r["forward_calls"]} == {"Sum": 1,
                                                                              "Add": 1}
    assert sum(row["backward_calls"] for row in prof.rows) == walked


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(nn.profiler, "clock", clock)
    return clock


def slow_function(clock):
    class Slow(Function):
        """y = 2x; forward takes 3 s and backward 5 s on the fake clock."""

        def forward(self, x):
            clock.advance(3)
            return x * 2

        def backward(self, gy):
            clock.advance(5)
            return gy * 2                    # a Mul inside a backward: part of Slow's 5 s
    return Slow


def test_times_go_to_the_right_op_and_add_up(fake_clock):
    Slow = slow_function(fake_clock)
    x = nn.Tensor(np.ones(3), requires_grad=True)
    with nn.profile() as prof:
        fake_clock.advance(7)                # outside any Function
        y = Slow()(Slow()(x))
        fake_clock.advance(11)
        y.backward(nn.Tensor(np.ones(3)))
    (row,) = prof.rows
    assert (row["op"], row["forward_calls"], row["backward_calls"]) == ("Slow", 2, 2)
    assert (row["forward_ms"], row["backward_ms"], row["total_ms"]) == (6000, 10000, 16000)
    assert prof.wall_ms == 7000 + 6000 + 11000 + 10000
    assert prof.outside_ms == 18000
    assert row["share"] == 16000 / 34000
    assert row["largest_input"] == (3,)
    table = prof.table(steps=2).splitlines()                  # per step: halves
    assert table[2].split()[:6] == ["Slow", "1", "3000.00", "1", "5000.00", "8000.00"]
    assert table[-2].split()[-2:] == ["9000.00", "52.9%"] and table[-1].split()[-2] == "17000.00"


def test_a_profile_adds_up_over_blocks(rng, fake_clock):
    prof = nn.Profile()
    x, w = (nn.Tensor(0.1 * rng.standard_normal((3, 4)), requires_grad=True) for _ in range(2))
    for _ in range(3):
        x.grad = w.grad = None
        with prof:
            chain(x, w, 2).backward()
            fake_clock.advance(1)
    # per block: 2 Adds in the graph, 2 + 1 summing x's 3 and w's 2 gradients (see above)
    assert {r["op"]: r["forward_calls"] for r in prof.rows} == {"Mul": 6, "Exp": 6, "Add": 15,
                                                                "Sum": 3}
    assert prof.wall_ms == 3000 and prof.ops_ms == 0


def test_real_clock_rows_add_up(rng):
    x = nn.Tensor(rng.standard_normal((2, 3, 8, 8)), requires_grad=True)
    w = nn.Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    with nn.profile() as prof:
        nn.functional.conv2d(x, w, padding=1).sum().backward()
    rows = prof.rows
    assert [r["op"] for r in rows if r["op"] == "Conv2d"] == ["Conv2d"]
    assert sum(r["total_ms"] for r in rows) == pytest.approx(prof.ops_ms, rel=1e-12)
    assert 0 < prof.ops_ms <= prof.wall_ms
    assert sum(r["share"] for r in rows) <= 1.0
    totals = [r["total_ms"] for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert next(r for r in rows if r["op"] == "Conv2d")["largest_input"] == (2, 3, 8, 8)


def test_hooks_are_off_after_the_block_even_after_an_error(fake_clock):
    class Broken(Function):
        def forward(self, x):
            raise ZeroDivisionError("inside forward")

    with pytest.raises(ZeroDivisionError):
        with nn.profile() as prof:
            Broken()(nn.Tensor(np.ones(2)))
    assert nn.tensor._profiler is None and prof.depth == 0
    nn.Tensor(np.ones(2)) * 2                   # not recorded: the hooks are off
    assert prof.rows == []                      # (a call that raised is not recorded either)


def test_profile_steps_warms_up_prints_and_saves(tmp_path, capsys, fake_clock):
    calls = []

    def step():
        calls.append(1)
        fake_clock.advance(1)

    path = tmp_path / "profile.txt"
    prof = nn.profile_steps(step, 4, path, warmup=2)
    assert len(calls) == 6 and prof.wall_ms == 4000
    printed = capsys.readouterr().out
    assert path.read_text() == printed
    assert "average of 4 steps" in printed and printed.splitlines()[-1].split()[-2] == "1000.00"
