"""One file per architecture: dcgan.py, vqvae.py, pixelcnn.py, stylegan.py.

Each model file that `generate.py` can sample from provides

    sample(checkpoint, n, seed, device, **options) -> float32 NumPy array (n, 1, S, S) in [-1, 1]

where `checkpoint` is the dict returned by `experiment.load_checkpoint` (its "model" entry names the
file, its "config" entry holds the flags the run was trained with).
"""
