"""Train a DCGAN (Radford, Metz & Chintala 2016) on brain MRI slices.

    python train_dcgan.py                          # bundled MNI slices, 64x64, CPU (~17 min, 2 cores)
    python train_dcgan.py --out runs/dcgan --resume              # continue after Ctrl-C
    python train_dcgan.py --data /data/OASIS --steps-per-epoch 0 --device gpu --image-size 256

Not in the paper: dropout 0.4 after D's hidden layers (as in the TensorFlow DCGAN this project grew
from). With the paper's D (--dropout 0) D wins outright on the bundled slices at 64x64 within ~200
steps (D loss -> 0.002, G draws grey noise); with dropout 0.4 G draws brain-shaped blobs by step 100.
Also not in the paper: samples and metrics come from a moving average of G's weights (as in
StyleGAN; --ema-half-life 0 uses G itself), which draws less grainy slices than the last G.

An "epoch" is --steps-per-epoch training steps (default 200); the bundled set is only 132 slices
(4 batches), so batches are drawn pass after pass over the (freshly augmented) data. Give
--steps-per-epoch 0 to make an epoch one pass over a large data set such as OASIS.

Writes to --out: samples/epoch_NNN.png (the same fixed noise every epoch), losses.png,
metrics.jsonl (one JSON record per epoch, and the final report), config.json, checkpoint.npz.
At the end it reports the nearest-neighbour SSIM of 64 samples against the training images (the
course metric, target >= 0.6) and the pairwise SSIM among samples vs among real images (diversity).
"""
import numpy as np

import data
import experiment
import nn
import nn.functional as F
import settings.dcgan
from evaluation.report import write_report
from experiment import distributed, pictures
from models import dcgan


def train_step(G, D, opt_g, opt_d, real, z, real_label=1.0):
    """One DCGAN training step on a batch of real images and latent vectors z; returns the losses
    and D's mean probability of "real" on the real and on the generated batch, as 0-d arrays on
    the batch's device (run.record reads them later, many steps in one transfer).

    real_label < 1 is one-sided label smoothing (Salimans et al. 2016): D's target for real
    images only, so D is never pushed to be certain; G's target stays 1."""
    xp = nn.backend.get_array_module(real.data)
    is_real = nn.Tensor(xp.ones(len(real), dtype=np.float32))
    smoothed = nn.Tensor(xp.full(len(real), real_label, dtype=np.float32))
    is_fake = nn.Tensor(xp.zeros(len(real), dtype=np.float32))
    fake = G(z)

    # (1) D step: maximise log D(x) + log(1 - D(G(z))), i.e. minimise the binary cross-entropy of
    #     "real" on real images and "fake" on generated ones. The two batches go through D
    #     separately (each gets its own batch-norm statistics), and the fake one is detached so
    #     that this step does not reach into G.
    logits_real = D(real)
    logits_fake = D(fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(logits_real, smoothed)
              + F.binary_cross_entropy_with_logits(logits_fake, is_fake))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()

    # (2) G step: maximise log D(G(z)) (the "non-saturating" loss of Goodfellow et al. 2014) on
    #     the same fake batch, now through the updated D. D is frozen meanwhile: the gradient
    #     flows through D into G, but D's own weight gradients (unused) are not computed.
    D.requires_grad_(False)
    loss_g = F.binary_cross_entropy_with_logits(D(fake), is_real)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)

    with nn.no_grad():                                            # for the log: no graph
        d_real, d_fake = F.sigmoid(logits_real).mean(), F.sigmoid(logits_fake).mean()
    return {"loss_d": loss_d.data, "loss_g": loss_g.data, "d_real": d_real.data,
            "d_fake": d_fake.data}


def train():
    run = experiment.start(settings.dcgan.flags(__doc__), model="dcgan",
                           memory=settings.dcgan.memory_estimate)   # every flag checked first
    cfg, device = run.config, run.device

    # ---- data: uint8 slices in memory, float32 batches in [-1, 1], flipped and jittered ----------
    dataset = experiment.load_images(cfg)
    loader = data.BatchLoader(dataset.images, cfg.batch_size, seed=cfg.seed, device=device)
    steps_per_epoch = cfg.steps_per_epoch or len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    print(f"data: {dataset.source}; {len(loader)} batches of {cfg.batch_size} per pass\n"
          f"training {total_steps} steps ({cfg.epochs} epochs of {steps_per_epoch}) on {device}, "
          f"writing to {cfg.out}", flush=True)

    # ---- models and optimizers (Radford et al. section 4: Adam, lr 2e-4, beta1 0.5) ---------------
    nn.manual_seed(cfg.seed)
    G, D = settings.dcgan.build(cfg)
    G_ema, _ = settings.dcgan.build(cfg)                          # the average of G, for samples
    G_ema.load_state_dict(G.state_dict())
    for model in (G, D, G_ema):
        model.to(device)
    averaging = cfg.ema_half_life > 0
    beta = 0.5 ** (cfg.batch_size / cfg.ema_half_life) if averaging else None
    sampler = G_ema if averaging else G                           # draws every picture and metric
    opt_g = nn.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = nn.optim.Adam(D.parameters(), lr=cfg.lr_d or cfg.lr, betas=(cfg.beta1, 0.999))
    opt_g, opt_d = distributed.averaging(opt_g), distributed.averaging(opt_d)   # mpiexec: mean grad
    noise = np.random.default_rng([cfg.seed, 1])                  # z for every training step
    fixed_z = np.random.default_rng([cfg.seed, 2]).standard_normal((cfg.samples, cfg.nz))

    # ---- what a checkpoint holds: saved after every epoch, loaded again by --resume ---------------
    state = {"generator": G, "discriminator": D,
             "generator_ema": sampler,                                    # what generate.py draws
             "optimizer_g": opt_g, "optimizer_d": opt_d,
             "rng_noise": noise, "rng_nn": nn.init.default_generator()}   # z; dropout masks
    step = run.restore(state)                     # training steps done so far (0 for a fresh run)
    distributed.replicate(G, D, G_ema, sync_batchnorm=cfg.sync_batchnorm)   # the same everywhere

    def one_step(step, batch):                    # the training step: the loop and --profile run it
        z = distributed.deal(noise.standard_normal((cfg.batch_size, cfg.nz), dtype=np.float32))
        losses = train_step(G, D, opt_g, opt_d, nn.Tensor(batch), nn.Tensor(z).to(device),
                            cfg.real_label)
        if averaging:
            nn.optim.update_average(G_ema, G, beta)               # G_ema <- beta G_ema + (1-beta) G
        return losses

    if cfg.profile:                               # --profile N: time N steps op by op, then stop
        return run.profile(one_step, experiment.stream(loader, step, step + cfg.profile + 1))

    # ---- the training loop ------------------------------------------------------------------------
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, step, end, total_steps)
        for step, batch in experiment.stream(loader, step, end):
            run.record(step + 1, **one_step(step, batch))         # values read every few steps
            run.stop_if_requested(state, step + 1)                # Ctrl-C: save and stop cleanly
        step = end
        pictures.save_grid(dcgan.generate(sampler, fixed_z),
                           run.path("samples", f"epoch_{epoch + 1:03d}.png"))
        run.end_epoch()
        run.save(state, step)

    # ---- how good are the samples? (scored once: evaluation/report.py) ----------------------------
    write_report(run, dcgan.generate(sampler, fixed_z), dataset.images)
    print(f"samples: {run.path('samples')}  losses: {run.path('losses.png')}  "
          f"checkpoint: {run.checkpoint_path}", flush=True)


if __name__ == "__main__":
    experiment.main(train)
