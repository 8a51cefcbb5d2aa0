"""nn.save / nn.load: nested round trips, no pickle, atomic writes, clear errors."""
import os
import zipfile

import numpy as np
import pytest

import nn
import nn.serialization


def checkpoint_like():
    return {
        "generator": {"conv.weight": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
                      "norm.running_var": np.ones(2, dtype=np.float64)},
        "codes": np.array([[1, 2], [3, 4]], dtype=np.int64),
        "image": np.full((2, 2), 255, dtype=np.uint8),
        "mask": np.array([True, False]),
        "scalar_array": np.array(1.5, dtype=np.float32),
        "epoch": 3, "lr": 2e-4, "name": "dcgan", "resumed": False, "best": None,
        "numpy_number": np.float32(0.5),
        "losses": [0.5, 0.25], "arrays": [np.zeros(2), {"deep": np.ones((1, 1))}],
        "betas": (0.5, 0.999), "empty": {}, "nothing": [],
    }


def test_nested_round_trip_keeps_values_and_dtypes(tmp_path):
    path = tmp_path / "checkpoint.npz"
    original = checkpoint_like()
    nn.save(original, path)
    loaded = nn.load(path)
    assert set(loaded) == set(original)
    for key in ("codes", "image", "mask", "scalar_array"):
        assert loaded[key].dtype == original[key].dtype and loaded[key].shape == original[key].shape
        np.testing.assert_array_equal(loaded[key], original[key])
    assert loaded["generator"]["conv.weight"].dtype == np.float32
    assert loaded["generator"]["norm.running_var"].dtype == np.float64
    assert (loaded["epoch"], loaded["lr"], loaded["name"]) == (3, 2e-4, "dcgan")
    assert type(loaded["epoch"]) is int and loaded["resumed"] is False and loaded["best"] is None
    assert loaded["numpy_number"] == 0.5 and loaded["losses"] == [0.5, 0.25]
    np.testing.assert_array_equal(loaded["arrays"][1]["deep"], np.ones((1, 1)))
    assert loaded["betas"] == [0.5, 0.999]  # tuples come back as lists
    assert loaded["empty"] == {} and loaded["nothing"] == []


def test_file_is_a_plain_npz_without_pickle(tmp_path):
    path = tmp_path / "checkpoint.npz"
    nn.save(checkpoint_like(), path)
    with np.load(path, allow_pickle=False) as archive:  # raises if anything needed pickle
        assert "generator/conv.weight" in archive.files and "arrays/1/deep" in archive.files
        for name in archive.files:
            assert archive[name].dtype != object
    with zipfile.ZipFile(path) as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())


def test_model_and_optimizer_checkpoint_round_trip(tmp_path, device):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).to(device)
    optimizer = nn.optim.Adam(model.parameters())
    model(nn.Tensor(np.ones((2, 1, 4, 4), dtype=np.float32)).to(device)).mean().backward()
    optimizer.step()
    nn.save({"model": model.state_dict(), "optim": optimizer.state_dict(),
             "raw": model[0].weight.data}, tmp_path / "c.npz")  # a CuPy array is copied to NumPy
    loaded = nn.load(tmp_path / "c.npz")
    assert type(loaded["raw"]) is np.ndarray
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded["model"][name], value)
    assert loaded["optim"]["state"]["0"]["step"] == 1


def test_unsupported_values_are_refused_with_their_path(tmp_path):
    with pytest.raises(TypeError, match="config/callback"):
        nn.save({"config": {"callback": print}}, tmp_path / "a.npz")
    with pytest.raises(TypeError, match="keys must be strings"):
        nn.save({"state": {0: np.zeros(1)}}, tmp_path / "a.npz")
    with pytest.raises(TypeError, match="dtype object"):
        nn.save({"x": np.array([None, 1], dtype=object)}, tmp_path / "a.npz")
    assert os.listdir(tmp_path) == []


def test_a_failing_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    nn.save({"epoch": 1, "w": np.ones(3)}, path)

    def write_half_then_fail(file, arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(nn.serialization, "_write_npz", write_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        nn.save({"epoch": 2, "w": np.zeros(3)}, path)
    assert nn.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # no temporary file left behind


def test_save_replaces_an_existing_file_and_uses_the_path_as_given(tmp_path):
    path = tmp_path / "model.ckpt"
    nn.save({"epoch": 1}, path)
    nn.save({"epoch": 2}, str(path))
    assert os.listdir(tmp_path) == ["model.ckpt"] and nn.load(path) == {"epoch": 2}


def test_missing_file_error_names_the_path(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(nn.CheckpointError, match="no checkpoint file at .*nowhere.npz"):
        nn.load(path)
    with pytest.raises(FileNotFoundError):
        nn.load(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"\x93NUMPY garbage"])
def test_non_npz_file_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(nn.CheckpointError, match="bad.npz"):
        nn.load(path)


def test_truncated_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.npz"
    nn.save({"w": np.ones(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(nn.CheckpointError, match="checkpoint.npz.*not a readable"):
        nn.load(path)


def test_single_npy_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.ones(3))
    with pytest.raises(nn.CheckpointError, match="single .npy array"):
        nn.load(path)


def test_plain_savez_file_loads_as_flat_dict(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.arange(3), b=np.ones((2, 2), dtype=np.float32))
    loaded = nn.load(path)
    assert set(loaded) == {"a", "b"} and loaded["b"].dtype == np.float32


def test_a_file_with_pickled_objects_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, evil=np.array([{"would": "unpickle"}], dtype=object))  # np.savez pickles it
    with pytest.raises(nn.CheckpointError, match="pickled.npz"):
        nn.load(path)
