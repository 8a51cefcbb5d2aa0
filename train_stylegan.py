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
checkpoint.npz, and at the end embedding_pca.png and embedding_tsne.png (generated against real
images, and AD against NC with --compare-with) and the nearest-neighbour SSIM / diversity report.
"""
import argparse
import time

import numpy as np

import data
import experiment
import nn
from evaluation import embedding
from evaluation.curve import LearningCurve, plot_curve
from evaluation.report import read_records, write_report
from evaluation.ssim import generation_report, print_report
from experiment import pictures
from experiment.files import copy_atomically
from models import diffaugment, stylegan
from models.stylegan_losses import (GAMMA_SCALINGS, LOSSES, discriminator_loss, generator_loss,
                                    identity, scaled_gamma)


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
    g.add_argument("--d-fmap-base", type=int, default=None,
                   help="D's own --fmap-base (default: G's)")
    g.add_argument("--d-fmap-max", type=int, default=None, help="D's own --fmap-max (default: G's)")
    g.add_argument("--critic", choices=stylegan.CRITICS, default="stylegan",
                   help="D: StyleGAN's own (grown with G), or DCGAN's (strided 4x4 convolutions, "
                        "batch norm, dropout; always at the final size, lower phases scaled up "
                        "to it; needs --loss ns) (default: %(default)s)")
    g.add_argument("--ndf", type=int, default=32, help="--critic dcgan: its width (default: %(default)s)")
    g.add_argument("--dropout", type=float, default=0.4,
                   help="--critic dcgan: dropout after its hidden layers (default: %(default)s)")
    g.add_argument("--phase-images", default="16000,16000,12000",
                   help="images at each resolution before the final one, from 8x8 up: one number "
                        "for all or a comma list (default: %(default)s)")
    g.add_argument("--fade-images", type=int, default=4000,
                   help="images over which each new resolution fades in (default: %(default)s)")
    g.add_argument("--no-blur", dest="blur", action="store_false",
                   help="leave out the [1,2,1] low-pass filter after G's upsampling convs and "
                        "before D's downsampling ones (the official code has it)")
    g.add_argument("--loss", choices=LOSSES, default="wgan-gp",
                   help="WGAN-GP + drift, or non-saturating + R1 (ns-r1, the paper's); on the "
                        "bundled slices WGAN-GP's samples scored 0.470 against 0.419 "
                        "(default: %(default)s)")
    g.add_argument("--gamma", type=float, default=10.0,
                   help="R1 weight, with --loss ns-r1 (default: %(default)s)")
    g.add_argument("--gamma-scaling", choices=GAMMA_SCALINGS, default="none",
                   help="resolution: R1's gamma at each phase times (res / image-size)^2, "
                        "StyleGAN2-ADA's gamma ~ res^2; with --loss ns-r1 (default: %(default)s)")
    g.add_argument("--diffaugment", default="", metavar="POLICY",
                   help="DiffAugment (Zhao et al. 2020): augment real and generated images before "
                        "D, a comma list of " + ",".join(diffaugment.POLICIES) +
                        " (default: none)")
    g.add_argument("--gp-weight", type=float, default=10.0, help="WGAN-GP lambda (default: %(default)s)")
    g.add_argument("--drift", type=float, default=0.001, help="WGAN drift weight (default: %(default)s)")
    g.add_argument("--reg-every", type=int, default=4,
                   help="lazy regularisation: penalty every k steps, times k (default: %(default)s)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--lr-d", type=float, default=None,
                   help="D's learning rate if different from --lr (default: --lr)")
    g.add_argument("--style-mixing", type=float, default=0.9,
                   help="probability of mixing two latents in a batch (default: %(default)s)")
    g.add_argument("--ema-half-life", type=float, default=1000.0,
                   help="images over which the averaged generator forgets half (default: %(default)s)")
    g.add_argument("--curve-every", type=int, default=1,
                   help="score the averaged generator's samples every N epochs and at the end of "
                        "every phase (learning_curve.png, 'curve' records); 0 = never "
                        "(default: %(default)s)")
    g.add_argument("--samples", type=int, default=64,
                   help="images in the grids and the final report (default: %(default)s)")
    g.add_argument("--metrics-real", type=int, default=2000,
                   help="compare samples with at most this many training images (default: %(default)s)")
    g.add_argument("--compare-with", default=None, metavar="CHECKPOINT",
                   help="another StyleGAN run (e.g. the NC one when this is AD) to add to the "
                        "embedding plot, with its real images")
    return p


def make_optimizers(G, D, resolution, cfg):
    """Fresh Adam(lr, betas=(0, 0.99)) over the parameters used at `resolution` (Karras et al.
    2018, appendix A.1: the state is reset whenever a resolution is added)."""
    return {"optimizer_g": nn.optim.Adam(stylegan.parameters_at(G, resolution), lr=cfg.lr,
                                         betas=(0.0, 0.99)),
            "optimizer_d": nn.optim.Adam(stylegan.parameters_at(D, resolution),
                                         lr=getattr(cfg, "lr_d", None) or cfg.lr,
                                         betas=(0.0, 0.99))}


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


def r1_gamma(cfg, resolution):
    """R1's gamma at `resolution` (--gamma-scaling; settings without it, e.g. older runs, use
    --gamma at every resolution)."""
    return scaled_gamma(cfg.gamma, resolution, cfg.image_size,
                        getattr(cfg, "gamma_scaling", "none"))


def train_step(G, D, opt_g, opt_d, real, resolution, alpha, step, rng, cfg, device,
               augment=identity):
    """One D update and one G update on the same generated batch; D sees augment(images) in both
    (DiffAugment's T, or the identity). Returns the values to log, as 0-d arrays on the device
    (run.record reads them later, many steps in one transfer)."""
    z, z_mix, crossover = latents(rng, cfg, stylegan.num_style_layers(resolution), device)
    noise = stylegan.make_noise(cfg.batch_size, resolution, rng, like=z)
    fake = G(z, resolution, alpha, noise, z_mix, crossover)   # graph kept for the G step

    # (1) D step on detached fakes; every --reg-every steps the gradient penalty is added.
    regularise = step % cfg.reg_every == 0
    loss_d, log = discriminator_loss(D, real, fake.data, resolution, alpha, cfg.loss, regularise,
                                     cfg.reg_every, r1_gamma(cfg, resolution), cfg.gp_weight,
                                     cfg.drift, rng, augment)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()

    # (2) G step through the updated D, whose weights are frozen so no D gradients are computed.
    D.requires_grad_(False)
    loss_g = generator_loss(D(augment(fake), resolution, alpha), cfg.loss)   # D(T(G(z)))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    log["g_loss"] = loss_g.data
    return log


# ---- the end of a phase, the seconds per image, real images at a resolution -------------------------

def save_phase(run, state, step, resolution, timing, samples, curve=None):
    """Pictures, loss curves and a copy of the checkpoint for the resolution just finished."""
    folder = ("phases", f"res_{resolution}")
    if curve is not None:
        curve(step, resolution, 1.0, samples)
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
    samples = stylegan.sample(other, count, seed, device)
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
    run = experiment.start(flags(), model="stylegan", check=stylegan.check_settings,
                           memory=stylegan.memory_estimate)   # all flags checked before writing
    cfg, device = run.config, run.device

    # ---- data and the progressive schedule ----------------------------------------------------------
    dataset = experiment.load_images(cfg)
    loader = data.BatchLoader(dataset.images, cfg.batch_size, seed=cfg.seed, device=device)
    steps_per_epoch = cfg.steps_per_epoch or len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    schedule = stylegan.Schedule(cfg.image_size, stylegan.phase_images(cfg), cfg.fade_images,
                                 cfg.batch_size)
    final_resolution, _ = schedule.at(total_steps - 1)
    print(f"data: {dataset.source}; resolutions {schedule.resolutions}, phases start at steps "
          f"{schedule.starts}; {total_steps} steps of {cfg.batch_size} images "
          f"(reaches {final_resolution}x{final_resolution}) on {device}, writing to {cfg.out}",
          flush=True)

    # ---- models: G, D and the averaged G used for every picture -----------------------------------
    G, D = stylegan.build(cfg, seed=cfg.seed)
    G_ema, _ = stylegan.build(cfg, seed=cfg.seed)
    G_ema.load_state_dict(G.state_dict())
    for model in (G, D, G_ema):
        model.to(device)
    ema_beta = 0.5 ** (cfg.batch_size / cfg.ema_half_life)
    rng = np.random.default_rng([cfg.seed, 1])                    # latents, noise, mixing, GP
    rng_augment = np.random.default_rng([cfg.seed, 4])            # DiffAugment's parameters
    augment = diffaugment.DiffAugment(cfg.diffaugment, rng_augment)
    fixed_rng = np.random.default_rng([cfg.seed, 2])
    fixed_z = fixed_rng.standard_normal((cfg.samples, cfg.z_dim)).astype(np.float32)
    fixed_noise_seed = int(fixed_rng.integers(2 ** 31))

    def fixed_samples(resolution):
        """The averaged generator's images for the fixed latents and the fixed noise."""
        return stylegan.generate(G_ema, fixed_z, resolution, np.random.default_rng(fixed_noise_seed))

    # ---- what a checkpoint holds: saved after every epoch and phase, loaded again by --resume -----
    saved = run.checkpoint or {}
    resolution = int(saved.get("resolution", schedule.at(0)[0]))  # the loop grows it when due
    state = {"generator": G, "discriminator": D, "generator_ema": G_ema,
             **make_optimizers(G, D, resolution, cfg), "rng": rng, "rng_augment": rng_augment}
    if cfg.critic == "dcgan":
        state["rng_nn"] = nn.init.default_generator()             # its dropout masks

    learning_curve = LearningCurve(dataset.images, cfg.samples, seed=cfg.seed) \
        if cfg.curve_every else None

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
    points = [r for _, r in read_records(cfg.out) if r.get("event") == "curve"] \
        if run.checkpoint else []
    step = run.restore(state)
    timing = {r: np.asarray(v, np.float64) for r, v in saved.get("timing", {}).items()}
    if cfg.profile:                               # --profile N: time N steps op by op, then stop
        batches = experiment.stream(loader, step, step + cfg.profile + 1)

        def one_step():                           # at the resolution where the run stands
            s, batch = next(batches)
            _, alpha = schedule.at(s)
            real = stylegan.fade_real_images(batch, resolution, alpha)
            train_step(G, D, state["optimizer_g"], state["optimizer_d"], real, resolution, alpha,
                       s, rng, cfg, device, augment)
        nn.profile_steps(one_step, cfg.profile, run.path("profile.txt"))
        return

    # ---- the training loop ----------------------------------------------------------------------
    last_penalty = (run.history.get("penalty") or [0.0])[-1]      # the value logged last (resume)
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, step, end, total_steps)
        for step, batch in experiment.stream(loader, step, end):
            new_resolution, alpha = schedule.at(step)
            if new_resolution != resolution:                      # a new phase: grow, reset Adam
                save_phase(run, state, step, resolution, timing, fixed_samples(resolution),
                           curve)
                resolution = new_resolution
                state.update(make_optimizers(G, D, resolution, cfg))
            real = stylegan.fade_real_images(batch, resolution, alpha)
            started = time.perf_counter()
            log = train_step(G, D, state["optimizer_g"], state["optimizer_d"], real, resolution,
                             alpha, step, rng, cfg, device, augment)
            nn.optim.update_average(G_ema, G, ema_beta)           # G_ema <- beta G_ema + (1-beta) G
            last_penalty = log.setdefault("penalty", last_penalty)  # computed every --reg-every
            run.record(step + 1, **log)                                # steps, logged at every one
            # On the GPU a step returns before the GPU has done its work; run.record waits for it
            # every few steps (when it reads the values), so the sum of these times is right up to
            # the last few steps of each resolution.
            timing.setdefault(str(resolution), np.zeros(2))
            timing[str(resolution)] += (time.perf_counter() - started, cfg.batch_size)
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
    save_phase(run, state, step, resolution, timing, fixed_samples(resolution), curve)

    # ---- how good are the samples? --------------------------------------------------------------
    report_rng = np.random.default_rng([cfg.seed, 3])
    samples = fixed_samples(resolution)
    real = real_images(dataset, resolution, report_rng.permutation(len(dataset))[:cfg.metrics_real])
    report = generation_report(samples, real, data_range=2.0, seed=cfg.seed)
    suffix = f" {cfg.classes}" if cfg.classes else ""
    picked = embedding.pick_per_class(dataset, cfg.samples, report_rng, "real" + suffix)
    groups = {group: real_images(dataset, resolution, indices) for group, indices in picked.items()}
    groups["generated" + suffix] = samples
    if cfg.compare_with:
        groups.update(compare_groups(cfg.compare_with, resolution, cfg.samples, cfg.seed, device))
    plots = embedding.plot_groups(groups, cfg.out, f"StyleGAN {resolution}x{resolution}", cfg.seed)
    rates = {r: seconds_per_image(timing, r) for r in sorted(timing, key=int)}
    run.log("report", step=step, resolution=resolution, seconds_per_image=rates, **report)
    print(f"reached {resolution}x{resolution}; seconds per training image by resolution: "
          + ", ".join(f"{r}x{r} {s:.4f}" for r, s in rates.items()), flush=True)
    print_report(report)
    write_report(run, samples)                          # report.html, sample-quality record
    print(f"samples: {run.path('phases')}  losses: {run.path('losses.png')}  "
          f"embeddings: {', '.join(plots)}", flush=True)


if __name__ == "__main__":
    experiment.main(train)
