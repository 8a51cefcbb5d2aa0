"""Each model's settings, beside its flags: what a run of that model can be told, and what follows
from it. One module per model, all of the same shape:

    settings.dcgan.flags(description)   the parser: the shared flags (experiment/flags.py) and the
                                        model's own, each declared once with its rule (rules.py)
    settings.stylegan.check(config, images)   the rules that tie several settings together
    settings.dcgan.build(config)        the networks (models/) those settings describe
    settings.dcgan.memory_estimate(config)    the bytes one training step needs
    settings.dcgan.sample(checkpoint, n, seed, device, **options)   generate.py's sampler

The architectures are in models/ (nothing there knows about flags or checkpoints); the training
loops are train_*.py; what keeps older runs loading is experiment/checkpoints.py's upgrade().
"""
