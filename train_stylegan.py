"""Train a StyleGAN (Karras et al. 2019), grown progressively from 8x8 (Karras et al. 2018).

    python train_stylegan.py                 # bundled MNI slices, 64x64, CPU (~17 min on 2 cores)
    python train_stylegan.py --out runs/stylegan --resume            # continue after Ctrl-C
    python train_stylegan.py --data /data/AD_NC --subset AD --device gpu --image-size 256 \\
        --fmap-base 4096 --fmap-max 256 --w-dim 256 --z-dim 256 --batch-size 32 \\
        --phase-images 60000 --fade-images 30000 --epochs 200 --out runs/stylegan_ad

The schedule is counted in images shown to D. Resolution 8 is trained for the first entry of
--phase-images, then each next resolution is faded in over --fade-images images and trained for its
own entry of --phase-images; the final resolution (--image-size) runs until the end of training,
which is --epochs x --steps-per-epoch steps of --batch-size images. A run that ends earlier stops at
a lower resolution (the log says which). Adam's state is reset at every new resolution.

Defaults: 64,000 images = 16,000 at 8x8, 16,000 at 16x16, 12,000 at 32x32, 20,000 at 64x64 (each
new resolution faded in over 4,000), measured at 4.7, 8.7, 15 and 29 ms per image on a 2-core AMD
EPYC: 17 minutes. D is trained with WGAN-GP (--loss wgan-gp); the paper's non-saturating loss with
R1 is --loss ns-r1 (on the bundled slices its samples scored 0.419 against WGAN-GP's 0.470).
On a shared machine run with OPENBLAS_NUM_THREADS=1 (see docs/stylegan.md: busy-waiting BLAS
threads made steps up to 25x slower).

Writes to --out: samples/epoch_NNN.png (fixed latents, averaged generator, upscaled to the final
size), phases/res_R/{samples.png, losses.png, checkpoint.npz} when resolution R is finished,
losses.png, metrics.jsonl (per epoch: losses, resolution, alpha, seconds per image), config.json,
checkpoint.npz, learning_curve.png (the fixed samples scored every epoch), and at the end
embedding_pca.png and embedding_tsne.png (generated against real images, and AD against NC with
--compare-with) and the final scores (evaluation/report.py).
"""
import argparse
import functools
import time
from dataclasses import dataclass, replace

import numpy as np

import data
import experiment
import nn
import settings.stylegan
from evaluation import embedding
from evaluation.curve import LearningCurve, plot_curve
from evaluation.report import read_records, write_report
from experiment import distributed, pictures
from experiment.files import copy_atomically
from models import diffaugment, stylegan
from models.stylegan_losses import Loss, discriminator_loss, generator_loss, scaled_gamma


@dataclass
class GAN:
    """What a training step works on besides the batch: both networks and their optimizers, the
    loss, D's augmentation T (DiffAugment, or the identity) and the generator of the step's
    random draws (latents, style mixing, noise, WGAN-GP's interpolation)."""
    G: stylegan.Generator
    D: nn.Module
    opt_g: nn.optim.Adam
    opt_d: nn.optim.Adam
    loss: Loss
    augment: diffaugment.DiffAugment
    rng: np.random.Generator
    z_dim: int
    style_mixing: float


def make_gan(G, D, cfg, rng, rng_augment):
    """The GAN of a run's settings; start_phase gives it the optimizers of a resolution."""
    loss = Loss(cfg.loss, cfg.gamma, cfg.gp_weight, cfg.drift, cfg.reg_every)
    return GAN(G, D, None, None, loss, diffaugment.DiffAugment(cfg.diffaugment, rng_augment), rng,
               cfg.z_dim, cfg.style_mixing)


def start_phase(gan, state, resolution, cfg):
    """A new resolution: fresh Adam(lr, betas=(0, 0.99)) over the parameters used there (Karras et
    al. 2018, appendix A.1: the state is reset whenever a resolution is added), and R1's gamma
    for it (--gamma-scaling). The checkpoint's `state` holds the new optimizers."""
    gan.opt_g = nn.optim.Adam(stylegan.parameters_at(gan.G, resolution), lr=cfg.lr,
                              betas=(0.0, 0.99))
    gan.opt_d = nn.optim.Adam(stylegan.parameters_at(gan.D, resolution), lr=cfg.lr_d or cfg.lr,
                              betas=(0.0, 0.99))
    gan.opt_g, gan.opt_d = distributed.averaging(gan.opt_g), distributed.averaging(gan.opt_d)
    gan.loss = replace(gan.loss, gamma=scaled_gamma(cfg.gamma, resolution, cfg.image_size,
                                                    cfg.gamma_scaling))
    state.update(optimizer_g=gan.opt_g, optimizer_d=gan.opt_d)


# ---- one training step ----------------------------------------------------------------------------

def latents(gan, batch, num_layers, device):
    """z (B, z_dim), and with probability --style-mixing a second z and a crossover layer."""
    def draw():
        z = gan.rng.standard_normal((batch, gan.z_dim)).astype(np.float32)
        return nn.Tensor(z).to(device)
    z = draw()
    if num_layers > 1 and gan.rng.uniform() < gan.style_mixing:
        return z, draw(), int(gan.rng.integers(1, num_layers))
    return z, None, None


def train_step(gan, real, resolution, alpha, step):
    """One D update and one G update on the same generated batch; D sees augment(images) in both
    (DiffAugment's T, or the identity). Returns the values to log, as 0-d arrays on the device
    (run.record reads them later, many steps in one transfer)."""
    device = nn.Tensor(real).device
    z, z_mix, crossover = latents(gan, len(real), stylegan.num_style_layers(resolution), device)
    noise = stylegan.make_noise(len(real), resolution, gan.rng, like=z)
    fake = gan.G(z, resolution, alpha, noise, z_mix, crossover)   # graph kept for the G step
    critic = functools.partial(gan.D, resolution=resolution, alpha=alpha)   # D where G stands

    # (1) D step on detached fakes; every --reg-every steps the gradient penalty is added.
    regularise = step % gan.loss.reg_every == 0
    loss_d, log = discriminator_loss(critic, real, fake.data, gan.loss, regularise, gan.rng,
                                     gan.augment)
    gan.opt_d.zero_grad()
    loss_d.backward()
    gan.opt_d.step()

    # (2) G step through the updated D, whose weights are frozen so no D gradients are computed.
    gan.D.requires_grad_(False)
    loss_g = generator_loss(critic(gan.augment(fake)), gan.loss)   # D(T(G(z)))
    gan.opt_g.zero_grad()
    loss_g.backward()
    gan.opt_g.step()
    gan.D.requires_grad_(True)
    log["g_loss"] = loss_g.data
    return log


# ---- the end of a phase, the seconds per image, real images at a resolution -------------------------

def save_phase(run, state, step, resolution, timing, samples):
    """Pictures, loss curves and a copy of the checkpoint for the resolution just finished."""
    folder = ("phases", f"res_{resolution}")
    run.save(state, step, resolution=resolution, timing=timing)   # reads the recorded values
    pictures.save_grid(samples, run.path(*folder, "samples.png"))
    pictures.plot_losses(run.history, run.path(*folder, "losses.png"),
                         title=f"StyleGAN up to {resolution}x{resolution}: losses per step")
    copy_atomically(run.checkpoint_path, run.path(*folder, "checkpoint.npz"))
    run.log("phase", step=step, resolution=resolution,
            seconds_per_image=seconds_per_image(timing, resolution))


def seconds_per_image(timing, resolution):
    """timing: {"8": [seconds, images], ...} of the training steps at each resolution."""
    seconds, count = timing.get(str(resolution), (0.0, 0))
    return round(float(seconds / count), 4) if count else None


def real_images(dataset, resolution, indices):
    """Real images (N, 1, R, R) in [-1, 1], box-filtered down to `resolution`."""
    chosen = dataset.images[indices]
    return stylegan.downscale_array(data.to_float(chosen)[:, None], chosen.shape[-1] // resolution)


def compare_groups(path, resolution, count, seed, device):
    """Samples and real images of another StyleGAN run (e.g. the NC run next to an AD one)."""
    other = experiment.load_checkpoint(path, "stylegan")
    config = argparse.Namespace(**other["config"])
    name = config.classes or "other run"
    samples = settings.stylegan.sample(other, count, seed, device)
    if samples.shape[-1] != resolution:
        raise experiment.ExperimentError(f"--compare-with {path} reached {samples.shape[-1]}x"
                                         f"{samples.shape[-1]}, this run {resolution}x{resolution}")
    dataset = experiment.load_images(config)
    picked = embedding.pick_per_class(dataset, count, np.random.default_rng(seed), f"real {name}")
    groups = {group: real_images(dataset, resolution, indices) for group, indices in picked.items()}
    groups[f"generated {name}"] = samples
    return groups


# ---- the run --------------------------------------------------------------------------------------

def train():
    run = experiment.start(settings.stylegan.flags(__doc__), model="stylegan",
                           check=settings.stylegan.check,
                           memory=settings.stylegan.memory_estimate)   # every flag checked first
    cfg, device = run.config, run.device

    # ---- data and the progressive schedule ----------------------------------------------------------
    dataset = experiment.load_images(cfg)
    loader = data.BatchLoader(dataset.images, cfg.batch_size, seed=cfg.seed, device=device)
    steps_per_epoch = cfg.steps_per_epoch or len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    schedule = settings.stylegan.Schedule(cfg.image_size, settings.stylegan.phase_images(cfg),
                                          cfg.fade_images, cfg.batch_size)
    final_resolution, _ = schedule.at(total_steps - 1)
    print(f"data: {dataset.source}; resolutions {schedule.resolutions}, phases start at steps "
          f"{schedule.starts}; {total_steps} steps of {cfg.batch_size} images "
          f"(reaches {final_resolution}x{final_resolution}) on {device}, writing to {cfg.out}",
          flush=True)

    # ---- models: G, D and the averaged G used for every picture -----------------------------------
    G, D = settings.stylegan.build(cfg, seed=cfg.seed)
    G_ema, _ = settings.stylegan.build(cfg, seed=cfg.seed)
    G_ema.load_state_dict(G.state_dict())
    for model in (G, D, G_ema):
        model.to(device)
    ema_beta = 0.5 ** (cfg.batch_size / cfg.ema_half_life)
    rng = distributed.dealing(np.random.default_rng([cfg.seed, 1]))   # latents, noise, mixing, GP
    rng_augment = distributed.dealing(np.random.default_rng([cfg.seed, 4]))   # DiffAugment's
    gan = make_gan(G, D, cfg, rng, rng_augment)
    fixed_rng = np.random.default_rng([cfg.seed, 2])
    fixed_z = fixed_rng.standard_normal((cfg.samples, cfg.z_dim)).astype(np.float32)
    fixed_noise_seed = int(fixed_rng.integers(2 ** 31))

    def fixed_samples(resolution):
        """The averaged generator's images for the fixed latents and the fixed noise."""
        return stylegan.generate(G_ema, fixed_z, resolution, np.random.default_rng(fixed_noise_seed))

    # ---- what a checkpoint holds: saved after every epoch and phase, loaded again by --resume -----
    saved = run.checkpoint or {}
    resolution = int(saved.get("resolution", schedule.at(0)[0]))  # the loop grows it when due
    state = {"generator": G, "discriminator": D, "generator_ema": G_ema, "rng": rng,
             "rng_augment": rng_augment}
    if cfg.critic in ("dcgan", "strided"):
        state["rng_nn"] = nn.init.default_generator()             # its dropout masks
    start_phase(gan, state, resolution, cfg)                      # the optimizers of this phase
    step = run.restore(state)
    distributed.replicate(G, D, G_ema, sync_batchnorm=cfg.sync_batchnorm)   # the same everywhere
    timing = {r: np.asarray(v, np.float64) for r, v in saved.get("timing", {}).items()}

    def one_step(step, batch):          # the training step: the loop and --profile run it, at the
        _, alpha = schedule.at(step)    # resolution the loop has reached
        real = stylegan.fade_real_images(batch, resolution, alpha)
        started = time.perf_counter()
        log = train_step(gan, real, resolution, alpha, step)
        nn.optim.update_average(G_ema, G, ema_beta)               # G_ema <- beta G_ema + (1-beta) G
        # On the GPU a step returns before the GPU has done its work; run.record waits for it
        # every few steps (when it reads the values), so the sum of these times is right up to
        # the last few steps of each resolution.
        timing.setdefault(str(resolution), np.zeros(2))
        timing[str(resolution)] += (time.perf_counter() - started, cfg.batch_size)
        return log

    if cfg.profile:                               # --profile N: time N steps op by op, then stop
        return run.profile(one_step, experiment.stream(loader, step, step + cfg.profile + 1))

    # ---- the learning curve: the fixed samples scored every --curve-every epochs and phase ------
    learning_curve = LearningCurve.if_possible(dataset.images, cfg.samples) \
        if cfg.curve_every else None     # scored as the final scores are (write_report)
    points = [r for _, r in read_records(cfg.out) if r.get("event") == "curve"]

    def curve(step, resolution, alpha, samples):
        """Score the fixed samples: one 'curve' record, and learning_curve.png redrawn."""
        if learning_curve is None or (points and points[-1]["step"] == step):
            return                                                # none, or scored already
        point = {"step": step, "images": step * cfg.batch_size, "resolution": resolution,
                 "alpha": round(alpha, 3), **learning_curve.score(samples, resolution)}
        run.log("curve", **point)
        points.append(point)
        plot_curve(points, run.path("learning_curve.png"),
                   title=f"StyleGAN: the averaged generator's {cfg.samples} fixed samples")

    # ---- the training loop ----------------------------------------------------------------------
    last_penalty = (run.history.get("penalty") or [0.0])[-1]      # the value logged last (resume)
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, step, end, total_steps)
        for step, batch in experiment.stream(loader, step, end):
            new_resolution, alpha = schedule.at(step)
            if new_resolution != resolution:                      # a new phase: grow, reset Adam
                samples = fixed_samples(resolution)
                curve(step, resolution, 1.0, samples)
                save_phase(run, state, step, resolution, timing, samples)
                resolution = new_resolution                       # (one_step reads it)
                start_phase(gan, state, resolution, cfg)
            log = one_step(step, batch)
            last_penalty = log.setdefault("penalty", last_penalty)  # computed every --reg-every
            run.record(step + 1, **log)                                # steps, logged at every one
            run.stop_if_requested(state, step + 1, resolution=resolution, timing=timing)
        step = end
        samples = fixed_samples(resolution)
        pictures.save_grid(pictures.upscale(samples, cfg.image_size),
                           run.path("samples", f"epoch_{epoch + 1:03d}.png"))
        if cfg.curve_every and (epoch + 1) % cfg.curve_every == 0 and epoch + 1 < cfg.epochs:
            curve(step, resolution, alpha, samples)
        run.end_epoch(resolution=resolution, alpha=round(alpha, 3),
                      seconds_per_image=seconds_per_image(timing, resolution))
        run.save(state, step, resolution=resolution, timing=timing)
    samples = fixed_samples(resolution)
    curve(step, resolution, 1.0, samples)
    save_phase(run, state, step, resolution, timing, samples)

    # ---- how good are the samples? (scored once: evaluation/report.py), and their embedding ------
    rates = {r: seconds_per_image(timing, r) for r in sorted(timing, key=int)}
    print(f"reached {resolution}x{resolution}; seconds per training image by resolution: "
          + ", ".join(f"{r}x{r} {s:.4f}" for r, s in rates.items()), flush=True)
    suffix = f" {cfg.classes}" if cfg.classes else ""
    picked = embedding.pick_per_class(dataset, cfg.samples, np.random.default_rng([cfg.seed, 3]),
                                      "real" + suffix)
    groups = {group: real_images(dataset, resolution, indices) for group, indices in picked.items()}
    groups["generated" + suffix] = samples
    if cfg.compare_with:
        groups.update(compare_groups(cfg.compare_with, resolution, cfg.samples, cfg.seed, device))
    plots = embedding.plot_groups(groups, cfg.out, f"StyleGAN {resolution}x{resolution}", cfg.seed)
    write_report(run, samples, dataset.images, resolution=resolution, seconds_per_image=rates)
    print(f"samples: {run.path('phases')}  losses: {run.path('losses.png')}  "
          f"embeddings: {', '.join(plots)}", flush=True)


if __name__ == "__main__":
    experiment.main(train)
