"""One file per architecture: dcgan.py, vqvae.py (with its prior, pixelcnn.py), stylegan.py (with
stylegan_layers.py, stylegan_losses.py and diffaugment.py). They hold the networks and their
equations only; the settings that build them from a run's flags, the memory estimates and the
samplers of saved runs are in settings/.
"""
