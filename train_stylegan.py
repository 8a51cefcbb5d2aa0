"""Train a StyleGAN (Karras et al. 2019), grown progressively from 8x8 (Karras et al. 2018).

    python train_stylegan.py                 # bundled MNI slices, 64x64, CPU (~23 min on 2 idle cores)
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
new resolution faded in over 4,000), measured at 4.5, 9, 20 and 44 ms per image on an idle 2-core
CPU: 23 minutes (19 with --no-blur). On a shared machine run with OPENBLAS_NUM_THREADS=1 (see
docs/stylegan.md: busy-waiting BLAS threads made steps up to 25x slower).

Writes to --out: samples/epoch_NNN.png (fixed latents, averaged generator, upscaled to the final
size), phases/res_R/{samples.png, losses.png, checkpoint.npz} when resolution R is finished,
losses.png, metrics.jsonl (per epoch: losses, resolution, alpha, seconds per image), config.json,
checkpoint.npz, and at the end embedding_pca.png and embedding_tsne.png (generated against real
images, and AD against NC with --compare-with) and the nearest-neighbour SSIM / diversity report.
"""
import argparse
import os
import shutil
import time

import numpy as np

import data
import experiment
from experiment import pictures
from evaluation import ssim
import nn
from models import stylegan
from models.stylegan_losses import LOSSES, discriminator_loss, generator_loss


def flags():
    p = experiment.parser(__doc__, out="runs/stylegan", image_size=64, batch_size=16,
                          epochs=40, steps_per_epoch=100)
    g = p.add_argument_group("StyleGAN")
    g.add_argument("--z-dim", type=int, default=64, help="latent size (default: %(default)s)")
    g.add_argument("--w-dim", type=int, default=64, help="style size (default: %(default)s)")
    g.add_argument("--mapping-layers", type=int, default=8, help="default: %(default)s")
    g.add_argument("--fmap-base", type=int, default=512,
                   help="channels at resolution R: min(fmap-max, fmap-base / R) (default: %(default)s)")
    g.add_argument("--fmap-max", type=int, default=64, help="default: %(default)s")
    g.add_argument("--phase-images", default="16000,16000,12000",
                   help="images at each resolution before the final one, from 8x8 up: one number "
                        "for all or a comma list (default: %(default)s)")
    g.add_argument("--fade-images", type=int, default=4000,
                   help="images over which each new resolution fades in (default: %(default)s)")
    g.add_argument("--no-blur", dest="blur", action="store_false",
                   help="leave out the [1,2,1] low-pass filter after G's upsampling convs and "
                        "before D's downsampling ones (the official code has it)")
    g.add_argument("--loss", choices=LOSSES, default="ns-r1",
                   help="non-saturating + R1, or WGAN-GP + drift (default: %(default)s)")
    g.add_argument("--gamma", type=float, default=10.0, help="R1 weight (default: %(default)s)")
    g.add_argument("--gp-weight", type=float, default=10.0, help="WGAN-GP lambda (default: %(default)s)")
    g.add_argument("--drift", type=float, default=0.001, help="WGAN drift weight (default: %(default)s)")
    g.add_argument("--reg-every", type=int, default=4,
                   help="lazy regularisation: penalty every k steps, times k (default: %(default)s)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--style-mixing", type=float, default=0.9,
                   help="probability of mixing two latents in a batch (default: %(default)s)")
    g.add_argument("--ema-half-life", type=float, default=1000.0,
                   help="images over which the averaged generator forgets half (default: %(default)s)")
    g.add_argument("--samples", type=int, default=64,
                   help="images in the grids and the final report (default: %(default)s)")
    g.add_argument("--metrics-real", type=int, default=2000,
                   help="compare samples with at most this many training images (default: %(default)s)")
    g.add_argument("--compare-with", default=None, metavar="CHECKPOINT",
                   help="another StyleGAN run (e.g. the NC one when this is AD) to add to the "
                        "embedding plot, with its real images")
    return p


# ---- the progressive schedule -------------------------------------------------------------------

class Schedule:
    """Maps a training step to (resolution, alpha). Phase k trains resolution 8 * 2^k."""

    def __init__(self, cfg):
        self.resolutions = stylegan.resolutions_up_to(cfg.image_size, stylegan.START_RESOLUTION)
        lengths = [int(v) for v in str(cfg.phase_images).split(",")]
        before_final = len(self.resolutions) - 1
        if len(lengths) == 1:
            lengths = lengths * before_final
        if len(lengths) < before_final:
            raise experiment.ExperimentError(
                f"--phase-images needs {before_final} values (resolutions "
                f"{self.resolutions[:-1]}) or one for all, got {cfg.phase_images}", code=2)
        self.batch = cfg.batch_size
        self.fade_steps = max(1, -(-cfg.fade_images // cfg.batch_size))
        self.starts = [0]                     # first step of each phase
        for images_in_phase in lengths[:before_final]:
            self.starts.append(self.starts[-1] + -(-images_in_phase // cfg.batch_size))

    def phase(self, step):
        return max(k for k, start in enumerate(self.starts) if step >= start)

    def at(self, step):
        k = self.phase(step)
        alpha = 1.0 if k == 0 else min(1.0, (step - self.starts[k]) / self.fade_steps)
        return self.resolutions[k], alpha


# ---- one training step ----------------------------------------------------------------------------

def latents(rng, cfg, num_layers, device):
    """z (B, z_dim), and with probability --style-mixing a second z and a crossover layer."""
    def draw():
        z = rng.standard_normal((cfg.batch_size, cfg.z_dim)).astype(np.float32)
        return nn.Tensor(z).to(device)
    z = draw()
    if num_layers > 1 and rng.uniform() < cfg.style_mixing:
        return z, draw(), int(rng.integers(1, num_layers))
    return z, None, None


def train_step(G, D, opt_g, opt_d, real, resolution, alpha, step, rng, cfg, device):
    """One D update and one G update on the same generated batch. Returns the values to log."""
    z, z_mix, crossover = latents(rng, cfg, stylegan.num_style_layers(resolution), device)
    noise = stylegan.make_noise(cfg.batch_size, resolution, rng, like=z)
    fake = G(z, resolution, alpha, noise, z_mix, crossover)   # graph kept for the G step

    # (1) D step on detached fakes; every --reg-every steps the gradient penalty is added.
    regularise = step % cfg.reg_every == 0
    loss_d, log = discriminator_loss(D, real, fake.data, resolution, alpha, cfg.loss, regularise,
                                     cfg.reg_every, cfg.gamma, cfg.gp_weight, cfg.drift, rng)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()

    # (2) G step through the updated D, whose weights are frozen so no D gradients are computed.
    D.requires_grad_(False)
    loss_g = generator_loss(D(fake, resolution, alpha), cfg.loss)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    log["g_loss"] = float(loss_g.data)
    return log


class LastPenalty:
    """The penalty is computed every --reg-every steps; log its latest value at every step so
    that every logged series has one value per step (the loss plot needs that)."""

    def __init__(self):
        self.value = 0.0

    def fill(self, log):
        self.value = log.setdefault("penalty", self.value)
        return log


def make_optimizers(G, D, resolution, cfg):
    """Fresh Adam(lr, betas=(0, 0.99)) over the parameters used at `resolution` (Karras et al.
    2018, appendix A.1: the state is reset whenever a resolution is added)."""
    opt_g = nn.optim.Adam(stylegan.parameters_at(G, resolution), lr=cfg.lr, betas=(0.0, 0.99))
    opt_d = nn.optim.Adam(stylegan.parameters_at(D, resolution), lr=cfg.lr, betas=(0.0, 0.99))
    return opt_g, opt_d


# ---- pictures -------------------------------------------------------------------------------------

def upscale(batch, size):
    """Nearest-neighbour upscaling of (N, 1, R, R) to (N, 1, size, size), for equal-sized grids."""
    factor = size // batch.shape[-1]
    return batch.repeat(factor, axis=2).repeat(factor, axis=3)


def embedding_plots(groups, folder, title, seed):
    """Two scatter plots of every image in `groups` (name -> (N, 1, S, S)), pixels as vectors:
    the first two principal components (embedding_pca.png) and t-SNE of the first 50
    (embedding_tsne.png). Returns the two paths."""
    from evaluation import embedding   # here: only the end of a run needs it
    names = list(groups)
    flat = np.concatenate([groups[name].reshape(len(groups[name]), -1) for name in names])
    labels = [name for name in names for _ in range(len(groups[name]))]
    pca_points, ratio = embedding.pca(flat, 2)
    pca_path = embedding.plot_embedding(
        pca_points, labels, os.path.join(folder, "embedding_pca.png"),
        f"{title}: PCA ({100 * ratio.sum():.0f}% of the variance)")
    tsne_path = embedding.plot_embedding(
        embedding.tsne(flat, seed=seed, pca_dims=50), labels,
        os.path.join(folder, "embedding_tsne.png"), f"{title}: t-SNE of PCA-50")
    return pca_path, tsne_path


def real_images(dataset, resolution, indices=None):
    """Real images (N, 1, R, R) in [-1, 1], box-filtered down to `resolution`."""
    chosen = dataset.images if indices is None else dataset.images[indices]
    return stylegan.downscale_array(data.to_float(chosen)[:, None], chosen.shape[-1] // resolution)


def real_groups(dataset, resolution, count, rng, name="real"):
    """Up to `count` real images per group, one group per class when the data set has several."""
    if dataset.labels is None or len(dataset.class_names or []) < 2:
        return {name: real_images(dataset, resolution, rng.permutation(len(dataset))[:count])}
    groups = {}
    for label, class_name in enumerate(dataset.class_names):
        members = np.flatnonzero(dataset.labels == label)
        groups[f"real {class_name}"] = real_images(dataset, resolution,
                                                   rng.permutation(members)[:count])
    return groups


def compare_groups(path, resolution, count, seed, device):
    """Samples and real images of another StyleGAN run (e.g. the NC run next to an AD one)."""
    other = experiment.load_checkpoint(path, "stylegan")
    config = argparse.Namespace(**other["config"])
    name = config.classes or "other run"
    samples = stylegan.sample(other, count, seed, device)
    if samples.shape[-1] != resolution:
        raise experiment.ExperimentError(f"--compare-with {path} reached {samples.shape[-1]}x"
                                         f"{samples.shape[-1]}, this run {resolution}x{resolution}")
    groups = real_groups(experiment.load_images(config), resolution, count,
                         np.random.default_rng(seed), name=f"real {name}")
    groups[f"generated {name}"] = samples
    return groups


# ---- the run --------------------------------------------------------------------------------------

def train():
    run = experiment.start(flags(), model="stylegan")
    cfg, device = run.config, run.device
    if cfg.batch_size % 4:
        raise experiment.ExperimentError("--batch-size must be a multiple of 4 (minibatch "
                                         "standard deviation groups)", code=2)

    dataset = experiment.load_images(cfg)
    loader = data.BatchLoader(dataset.images, cfg.batch_size, seed=cfg.seed, device=device)
    steps_per_epoch = cfg.steps_per_epoch or len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    schedule = Schedule(cfg)
    final_resolution, _ = schedule.at(total_steps - 1)
    print(f"data: {dataset.source}; resolutions {schedule.resolutions}, phases start at steps "
          f"{schedule.starts}; {total_steps} steps of {cfg.batch_size} images "
          f"(reaches {final_resolution}x{final_resolution}) on {device}, writing to {cfg.out}",
          flush=True)

    # ---- models: G, D and the averaged G used for every picture ---------------------------------
    G, D = stylegan.build(cfg, seed=cfg.seed)
    G_ema, _ = stylegan.build(cfg, seed=cfg.seed)
    G_ema.load_state_dict(G.state_dict())
    for model in (G, D, G_ema):
        model.to(device)
    ema_beta = 0.5 ** (cfg.batch_size / cfg.ema_half_life)
    rng = np.random.default_rng([cfg.seed, 1])                    # latents, noise, mixing, GP
    fixed_rng = np.random.default_rng([cfg.seed, 2])
    fixed_z = fixed_rng.standard_normal((cfg.samples, cfg.z_dim)).astype(np.float32)
    fixed_noise_seed = int(fixed_rng.integers(2 ** 31))

    def fixed_samples(resolution):
        """The averaged generator's images for the fixed latents and the fixed noise."""
        return stylegan.generate(G_ema, fixed_z, resolution, np.random.default_rng(fixed_noise_seed))

    step = 0
    resolution, alpha = schedule.at(0)
    opt_g, opt_d = make_optimizers(G, D, resolution, cfg)
    timing = {}                                  # resolution -> [seconds, images] of training steps
    if run.checkpoint is not None:
        saved = run.checkpoint
        step = saved["step"]
        resolution = int(saved["resolution"])    # the loop below grows it if the phase is over
        G.load_state_dict(saved["generator"])
        D.load_state_dict(saved["discriminator"])
        G_ema.load_state_dict(saved["generator_ema"])
        opt_g, opt_d = make_optimizers(G, D, resolution, cfg)
        opt_g.load_state_dict(saved["optimizer_g"])
        opt_d.load_state_dict(saved["optimizer_d"])
        experiment.set_rng_state(rng, saved["rng"])
        timing = {int(k): [float(t) for t in v] for k, v in saved["timing"].items()}
        print(f"resumed from {run.checkpoint_path} at step {step} ({resolution}x{resolution})",
              flush=True)

    def seconds_per_image(r):
        seconds, count = timing.get(r, (0.0, 0))
        return round(seconds / count, 4) if count else None

    def checkpoint(step):
        return {"step": step, "epoch": step // steps_per_epoch, "resolution": resolution,
                "generator": G.state_dict(), "discriminator": D.state_dict(),
                "generator_ema": G_ema.state_dict(),
                "optimizer_g": opt_g.state_dict(), "optimizer_d": opt_d.state_dict(),
                "rng": experiment.rng_state(rng),
                "timing": {str(k): np.asarray(v) for k, v in timing.items()}}

    def finish_phase(step):
        """Pictures, loss curves and a copy of the checkpoint for the resolution just finished."""
        folder = os.path.join(cfg.out, "phases", f"res_{resolution}")
        os.makedirs(folder, exist_ok=True)
        pictures.save_grid(fixed_samples(resolution), os.path.join(folder, "samples.png"))
        pictures.plot_losses(run.history, os.path.join(folder, "losses.png"),
                           title=f"StyleGAN up to {resolution}x{resolution}: losses per step")
        run.save(checkpoint(step))
        shutil.copyfile(run.checkpoint_path, os.path.join(folder, "checkpoint.npz"))
        run.log("phase", step=step, resolution=resolution,
                seconds_per_image=seconds_per_image(resolution))

    # ---- the training loop ----------------------------------------------------------------------
    last_penalty = LastPenalty()
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, step, end, total_steps)
        for step, batch in experiment.stream(loader, step, end):
            new_resolution, alpha = schedule.at(step)
            if new_resolution != resolution:                      # a new phase: grow, reset Adam
                finish_phase(step)
                resolution = new_resolution
                opt_g, opt_d = make_optimizers(G, D, resolution, cfg)
            real = stylegan.fade_real_images(batch, resolution, alpha)
            started = time.perf_counter()
            log = train_step(G, D, opt_g, opt_d, real, resolution, alpha, step, rng, cfg, device)
            nn.optim.update_average(G_ema, G, ema_beta)   # samples come from G_ema
            seconds_and_images = timing.setdefault(resolution, [0.0, 0])
            seconds_and_images[0] += time.perf_counter() - started
            seconds_and_images[1] += cfg.batch_size
            run.record(step + 1, **last_penalty.fill(log))
            if run.stop_requested:
                run.save(checkpoint(step + 1))
                raise run.interrupted(step + 1)
        step = end
        pictures.save_grid(upscale(fixed_samples(resolution), cfg.image_size),
                         run.path("samples", f"epoch_{epoch + 1:03d}.png"))
        run.end_epoch(resolution=resolution, alpha=round(alpha, 3),
                      seconds_per_image=seconds_per_image(resolution))
        run.save(checkpoint(step))
    finish_phase(step)

    # ---- how good are the samples? --------------------------------------------------------------
    report_rng = np.random.default_rng([cfg.seed, 3])
    samples = fixed_samples(resolution)
    real = real_images(dataset, resolution, report_rng.permutation(len(dataset))[:cfg.metrics_real])
    report = ssim.generation_report(samples, real, data_range=2.0, seed=cfg.seed)
    groups = real_groups(dataset, resolution, cfg.samples, report_rng,
                         name=f"real {cfg.classes}" if cfg.classes else "real")
    groups[f"generated {cfg.classes}" if cfg.classes else "generated"] = samples
    if cfg.compare_with:
        groups.update(compare_groups(cfg.compare_with, resolution, cfg.samples, cfg.seed, device))
    plots = embedding_plots(groups, cfg.out, f"StyleGAN {resolution}x{resolution}", cfg.seed)
    rates = {r: seconds_per_image(r) for r in sorted(timing)}
    run.log("report", step=step, resolution=resolution, seconds_per_image=rates, **report)
    print(f"reached {resolution}x{resolution}; seconds per training image by resolution: "
          + ", ".join(f"{r}x{r} {s:.4f}" for r, s in rates.items()), flush=True)
    ssim.print_report(report)
    print(f"samples: {run.path('phases')}  losses: {run.path('losses.png')}  "
          f"embeddings: {', '.join(plots)}", flush=True)


if __name__ == "__main__":
    experiment.main(train)
