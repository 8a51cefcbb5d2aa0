"""StyleGAN's per-layer noise (models/stylegan.py make_noise): float32, cut from one draw, drawn on
the device the networks are on (nothing copied from the host: at 256x256, batch 32 it was 22 MB a
step), and decided by the run's NumPy generator, whose state the checkpoint saves: a resumed run
draws what an uninterrupted run drew, on either device."""
import numpy as np
import pytest

import nn
from models import stylegan

SHAPES_16 = [(3, 1, r, r) for r in (4, 8, 16) for _ in range(2)]     # batch 3, up to 16x16


def like(device):
    return nn.Tensor(np.zeros(1, np.float32)).to(device)


def test_on_the_cpu_the_noise_is_one_float32_draw_from_the_generator():
    noise = stylegan.make_noise(3, 16, np.random.default_rng(5))
    assert [n.shape for n in noise] == SHAPES_16
    assert all(n.dtype == np.float32 and n.device == "cpu" for n in noise)
    per_image = sum(np.prod(s[1:]) for s in SHAPES_16)           # batch first: (3, values)
    values = np.random.default_rng(5).standard_normal((3, per_image), dtype=np.float32)
    flat = np.concatenate([n.numpy().reshape(3, -1) for n in noise], axis=1)
    np.testing.assert_array_equal(flat, values)


def test_on_the_device_the_noise_is_one_draw_there_and_nothing_is_copied(cupy_standin):
    rng, on_gpu = np.random.default_rng(5), like("gpu")
    with cupy_standin._standin.counting() as counts:
        noise = stylegan.make_noise(3, 16, rng, like=on_gpu)
    draws = {kind: n for kind, n in counts.by_kind.items() if kind.startswith("random")}
    assert draws == {"random:standard_normal": 1}, counts.by_kind   # (+ a copy per layer)
    assert counts.host_to_device == 0 and counts.host_reads == 0
    assert [n.shape for n in noise] == SHAPES_16
    assert all(n.dtype == np.float32 and n.device == "gpu" for n in noise)
    values = np.concatenate([n.numpy().ravel() for n in noise])
    assert abs(values.mean()) < 0.1 and abs(values.std() - 1) < 0.1     # 2016 N(0, 1) values
    again = np.random.default_rng(5)
    assert rng.bit_generator.state == (again.integers(2 ** 63), again.bit_generator.state)[1]


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_the_generators_state_decides_the_noise(cupy_standin, device):
    """What exact resuming needs: restore the generator's saved state and the next noise is the
    noise an uninterrupted run drew next; the state moves on with every draw."""
    rng = np.random.default_rng(7)
    stylegan.make_noise(2, 8, rng, like=like(device))                      # a step before
    saved = rng.bit_generator.state                                        # the checkpoint
    first = [n.numpy() for n in stylegan.make_noise(2, 8, rng, like=like(device))]
    second = [n.numpy() for n in stylegan.make_noise(2, 8, rng, like=like(device))]
    resumed = np.random.default_rng(0)
    resumed.bit_generator.state = saved
    again = [n.numpy() for n in stylegan.make_noise(2, 8, resumed, like=like(device))]
    for a, b, c in zip(first, again, second):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_on_host_gives_the_same_noise_on_every_device(cupy_standin):
    """generate() draws on the host: a checkpoint's samples are the same images on both."""
    found = {device: stylegan.make_noise(3, 16, np.random.default_rng(2), like=like(device),
                                         on_host=True) for device in ("cpu", "gpu")}
    assert all(n.device == "gpu" for n in found["gpu"])
    for a, b in zip(found["cpu"], found["gpu"]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
