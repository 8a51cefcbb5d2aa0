"""One file per architecture: dcgan.py, vqvae.py (with its prior, pixelcnn.py), stylegan.py.

Each of the three provides `build(config)`, the networks for a run's settings, and the sampler
that generate.py names in its SAMPLERS dict:

    sample(checkpoint, n, seed, device, **options) -> float32 NumPy array (n, 1, S, S) in [-1, 1]

where `checkpoint` is the dict returned by `experiment.load_checkpoint` (its "model" entry names the
file, its "config" entry holds the flags the run was trained with).

Each also states the settings it accepts in one place, which the training script checks before it
writes anything (settings.py holds the rules):

    SETTINGS = {"image_size": settings.power_of_two(16), ...}      # one row per flag
    check_settings(config, images=None)    # raises settings.SettingsError naming flag and value
    memory_estimate(config)                # bytes one training step needs (see settings.step_bytes)
"""
