"""--profile N on every training script: N steps timed op by op, the table printed and saved as
profile.txt in --out, and the run stops without training on (no checkpoint)."""
import pytest

from conftest import run_script
TINY = {
    "train_dcgan.py": ["--image-size", "16", "--ngf", "4", "--ndf", "4", "--nz", "8",
                       "--batch-size", "8", "--samples", "8"],
    "train_stylegan.py": ["--image-size", "16", "--batch-size", "8", "--phase-images", "24",
                          "--fade-images", "16", "--fmap-base", "32", "--fmap-max", "8",
                          "--z-dim", "8", "--w-dim", "8", "--samples", "8"],
    "train_vqvae.py": ["--image-size", "16", "--channels", "8", "--res-channels", "4",
                       "--codes", "16", "--code-dim", "4", "--prior-channels", "8",
                       "--prior-layers", "2", "--batch-size", "8", "--samples", "4"],
}

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", sorted(TINY))
def test_profile_writes_the_table_and_stops(script, tmp_path):
    out = tmp_path / "run"
    result = run_script(script, "--out", out, "--profile", "2", *TINY[script])
    table = (out / "profile.txt").read_text()
    assert table.strip() in result.stdout                    # printed and saved alike
    assert "Conv2d" in table and "wall time" in table         # an op row and the total
    assert not (out / "checkpoint.npz").exists()              # it stopped: nothing trained on
