"""evaluation/curve.py: the learning curve's points are the final scores of the same samples, and
the real slices' own scores at each resolution are the reference a phase is read against."""
import numpy as np

import data
from evaluation.curve import LearningCurve, plot_curve, shrink_and_enlarge
from evaluation.report import score_run


def slices(size=32):
    return data.load_images(None, image_size=size, split="all").images


def test_a_point_at_the_final_size_equals_the_runs_final_scores():
    images = slices()
    samples = data.to_float(images[np.arange(0, 132, 11)])[:, None]      # 12 real slices
    point = LearningCurve(images, len(samples)).score(samples, 32)
    record, _ = score_run({"data": None, "split": "all"}, "stylegan", samples, images=images)
    for key in ("nn_ssim", "pairwise_ssim", "precision", "recall", "coverage"):
        assert point[key] == round(record[key], 4), key


def test_lower_resolutions_are_scored_scaled_up_and_read_against_the_real_slices_there(tmp_path):
    images = slices()
    curve = LearningCurve(images, 12)
    real = data.to_float(images)[:, None]
    blocky = shrink_and_enlarge(real[:12], 8)[:, :, ::4, ::4]          # 8x8 images
    assert blocky.shape == (12, 1, 8, 8)
    point = curve.score(blocky, 8)
    assert point["real_nn_ssim"] < curve.reference(32)["real_nn_ssim"]  # blocks cost NN-SSIM
    assert point["nn_ssim"] < curve.score(real[:12], 32)["nn_ssim"] - 0.2   # the same slices
    points = [dict(point, images=100, resolution=8),
              dict(curve.score(real[:12], 32), images=200, resolution=32)]
    assert plot_curve(points, str(tmp_path / "curve.png")) and (tmp_path / "curve.png").exists()
