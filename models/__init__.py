"""One file per architecture: dcgan.py, vqvae.py (with its prior, pixelcnn.py), stylegan.py.

Each of the three provides `build(config)`, the networks for a run's settings, and the sampler
that generate.py names in its SAMPLERS dict:

    sample(checkpoint, n, seed, device, **options) -> float32 NumPy array (n, 1, S, S) in [-1, 1]

where `checkpoint` is the dict returned by `experiment.load_checkpoint` (its "model" entry names the
file, its "config" entry holds the flags the run was trained with).
"""
