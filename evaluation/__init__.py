"""Judging samples: how close generated slices come to real ones, and how varied they are.

    ssim.py            SSIM (Wang et al. 2004), nearest-neighbour and pairwise SSIM
    embedding.py       PCA and t-SNE from scratch, scatter plots of generated against real images
    sample_quality.py  every other sample metric at once, next to the held-out "as good as real" row:
    coverage.py        precision, recall, density and coverage (k-nearest-neighbour balls)
    kid.py             Kernel Inception Distance's unbiased MMD^2 estimator, on any features
    memorisation.py    are samples closer to the training images than held-out real images are?
    features.py        the feature spaces they use (PCA of the training images, raw pixels)
    comparison.py      the held-out rule, the real sets and the table compare.py prints
    report.py          the one scoring of a run's final samples (write_report: metrics.jsonl,
                       the console line and report.html), and report.html itself
    curve.py           the learning curve: the same scores during training
"""
