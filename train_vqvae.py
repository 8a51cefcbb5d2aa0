"""Train a VQ-VAE (van den Oord et al. 2017) and a gated PixelCNN prior over its codes; sample brains.

    python train_vqvae.py                     # all three stages, bundled slices, CPU (~20 min)
    python train_vqvae.py --stage vqvae       # stage 1 only; later:  --stage prior,  --stage sample
    python train_vqvae.py --out runs/vqvae --resume                     # continue after Ctrl-C
    python train_vqvae.py --data /data/OASIS --split train --image-size 128 --downsamples 3 \\
        --channels 64 --codes 256 --steps-per-epoch 0 --device gpu      # OASIS on a GPU
    python train_vqvae.py --data /data/other --prior-levels 0           # slices of unknown level

Stage 1, vqvae: images -> encoder -> nearest codebook vectors -> decoder, trained on reconstruction
  MSE + codebook loss + 0.25 x commitment loss (EMA codebook of K = 128 codes, dead-code restarts),
  15 epochs of 400 steps of 8 slices, not augmented (--augment to augment them).
  Every fifth slice (index % 5 == 4) is held out and only used to measure reconstruction SSIM.
Stage 2, prior: every training slice (and --augment-copies augmented copies of each) is encoded
  once into a code map; a gated PixelCNN learns p(code map | slice level) by cross-entropy, 12
  epochs of 200 steps of 16 maps (the same maps per epoch as stage 1's slices), dropout 0.1 in
  every gated layer. The level is the slice's height in --prior-levels equal bins
  (data/levels.py; 0 = unconditional). Every epoch reports bits per code on the un-augmented
  training maps and on the held-out slices' maps.
Stage 3, sample: the PixelCNN draws --samples code maps at temperature 0.8, covering the levels
  evenly, one position at a time (one network pass per code: 256 passes for a 16x16 map, which
  is why the defaults keep the map at 16x16), and the decoder turns them into images.

64x64 slices with 2 stride-2 layers give 16x16 codes. An "epoch" is --steps-per-epoch steps (the
bundled set is only ~106 training slices). --stage prior and --stage sample continue the run in
--out (they imply --resume); `python generate.py --checkpoint <out>/checkpoint.npz` samples too.

Writes to --out: checkpoint.npz (everything so far), metrics.jsonl, config.json, losses.png (the
current stage) and vqvae_losses.png / prior_losses.png, reconstructions/epoch_NNN.png (held-out
originals above their reconstructions), reconstructions.png (with per-image SSIM), codes.png
(held-out slices and their code maps), samples.png (8 sampled code maps, lowest level to highest,
above the decoded images), sample_grid.png (all samples),
samples/img_NNNN.png.
"""
import numpy as np

import data
import experiment
import nn
import settings.vqvae
from evaluation.report import write_report
from evaluation.ssim import ssim_batch
from experiment import distributed, pictures
from models import vqvae
from models.pixelcnn import bits_per_code, mean_bits
from models.vqvae import code_counts, perplexity


def cosine_lr(base, step, total, floor=0.05):
    """Learning rate at `step` of `total`: from base down to floor * base along half a cosine."""
    return base * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * min(step / total, 1.0))))


# ---- stage 1: the VQ-VAE ------------------------------------------------------------------------

def vqvae_step(model, optimizer, x, rng):
    """One step on batch x: loss = |x - x_hat|^2 + codebook + beta * commitment (paper eq. 3).
    Returns the values to log as 0-d arrays on the device (run.record reads them later), and the
    batch's code map."""
    reconstruction, vq = model(x)
    reconstruction_loss = ((reconstruction - x) ** 2).mean()
    loss = reconstruction_loss + vq["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    flat, codes = distributed.whole_batch(vq["flat"], vq["codes"], images=len(x))   # mpiexec: all
    restarted = model.quantizer.update(flat, codes, rng)               # EMA, dead-code restarts
    values = {"reconstruction": reconstruction_loss.data,
              "commitment": vq["commitment_loss"].data,
              "perplexity": perplexity(code_counts(codes, model.quantizer.num_codes)),   # exp(H)
              "restarts": restarted}
    if not model.quantizer.ema:
        values["codebook"] = vq["codebook_loss"].data
    return values, codes


def train_vqvae(run, state, train_images, held, step):
    """Stage 1 from training step `step` to the end; returns the steps done (with --profile N:
    times N steps, op by op, and returns their nn.Profile instead)."""
    cfg, model, optimizer = run.config, state["vqvae"], state["vqvae_optimizer"]
    loader = data.BatchLoader(train_images, cfg.batch_size, seed=cfg.seed, device=run.device,
                              augment=cfg.augment)
    steps_per_epoch = cfg.steps_per_epoch or len(loader)
    total = cfg.epochs * steps_per_epoch
    used = nn.backend.array_module_for(run.device).zeros(cfg.codes, dtype=np.int64)   # per epoch

    def one_step(step, batch):                    # the training step: the loop and --profile run it
        optimizer.param_groups[0]["lr"] = cosine_lr(cfg.lr, step, total)
        values, codes = vqvae_step(model, optimizer, nn.Tensor(batch), state["rng_restart"])
        used[...] += code_counts(codes, cfg.codes)
        return values

    if cfg.profile:                               # --profile N: N of these steps, op by op
        return run.profile(one_step, experiment.stream(loader, step, step + cfg.profile + 1))
    print(f"stage 1/3, VQ-VAE: {total} steps of {cfg.batch_size} "
          f"{'augmented ' if cfg.augment else ''}slices ({len(train_images)} training, "
          f"{len(held)} held out) on {run.device}", flush=True)
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, step, end, total)
        used[...] = 0
        for step, batch in experiment.stream(loader, step, end):
            run.record(step + 1, **one_step(step, batch))
            run.stop_if_requested(state, step + 1, vqvae_steps=step + 1, prior_steps=0)
        step = end
        reconstruction, _ = vqvae.reconstruct(model, held)
        pictures.save_grid(np.concatenate([held[:8], reconstruction[:8]]),
                           run.path("reconstructions", f"epoch_{epoch + 1:03d}.png"), nrow=8)
        run.end_epoch(held_out_ssim=float(ssim_batch(reconstruction, held).mean()),
                      codes_used=int((used > 0).sum()), epoch_perplexity=float(perplexity(used)))
        pictures.plot_losses(run.history, run.path("vqvae_losses.png"),
                             title="VQ-VAE: losses per step")
        run.save(state, step, vqvae_steps=step, prior_steps=0)
    return step


def report_reconstructions(run, model, held, step):
    """Held-out SSIM of the reconstructions: logged, printed, and drawn with the code maps."""
    reconstruction, codes = vqvae.reconstruct(model, held)
    ssim = ssim_batch(reconstruction, held, data_range=2.0)
    run.log("reconstruction", step=step, held_out_ssim_mean=float(ssim.mean()),
            held_out_ssim_std=float(ssim.std()), held_out_ssim_min=float(ssim.min()),
            held_out_codes_used=int(len(np.unique(codes))),
            held_out_perplexity=float(perplexity(code_counts(codes, run.config.codes))))
    pictures.image_rows(run.path("reconstructions.png"), [
        {"images": held, "label": "held-out originals (top)"},
        {"images": reconstruction, "captions": [f"SSIM {value:.3f}" for value in ssim]}])
    pictures.image_rows(run.path("codes.png"), [
        {"images": held},
        {"images": codes, "cmap": "tab20", "vmin": None, "vmax": None, "interpolation": "nearest"}])
    print(f"held-out reconstruction SSIM {ssim.mean():.3f} +- {ssim.std():.3f} (min "
          f"{ssim.min():.3f}); {len(np.unique(codes))} of {run.config.codes} codes in use", flush=True)


# ---- stage 2: the PixelCNN prior over code maps -------------------------------------------------

def code_maps_for_the_prior(run, model, train_images, held, labels):
    """What stage 2 learns from: the code maps saved with the run or, the first time, every
    training slice encoded, then --augment-copies augmented copies of each (each copy in the
    shuffled order of its loader epoch), and the held-out slices; with the training slice each
    map is of, and with levels each map's label (computed afresh, so a changed --prior-levels
    relabels saved maps). The first time, the VQ-VAE's losses become its stage's history."""
    cfg, saved = run.config, run.checkpoint or {}
    if "prior_codes" in saved:
        maps = {key: saved[key] for key in ("prior_codes", "prior_slices", "held_codes")}
    else:
        model.eval()
        codes, slices = [], []
        for copy in range(cfg.augment_copies + 1):
            loader = data.BatchLoader(train_images, 64, seed=cfg.seed, device=run.device,
                                      augment=copy > 0, drop_last=False)
            for batch in loader.epoch(copy):
                codes.append(nn.backend.to_numpy(model.encode(nn.Tensor(batch))))
            slices.append(loader.order(copy))
        maps = {"prior_codes": np.concatenate(codes), "prior_slices": np.concatenate(slices),
                "held_codes": nn.backend.to_numpy(model.encode(nn.Tensor(held).to(run.device)))}
        run.begin_stage("vqvae")                  # from here on losses.png shows the prior
    if labels is not None:
        train_labels, held_labels = labels
        maps.update(prior_labels=train_labels[maps["prior_slices"]], held_labels=held_labels)
    return maps


def prior_steps_per_epoch(cfg, maps):
    """A prior epoch sees as many code maps as a VQ-VAE epoch sees slices: --steps-per-epoch x
    --batch-size / --prior-batch-size steps (one pass over the `maps` maps with 0)."""
    if cfg.steps_per_epoch == 0:
        return -(-maps // cfg.prior_batch_size)
    return max(1, round(cfg.steps_per_epoch * cfg.batch_size / cfg.prior_batch_size))


def prior_batch(cfg, code_maps, step, xp):
    """The code maps of prior step `step` (and their labels, None without levels), on the
    device: a random pick that depends on (seed, step) alone."""
    train_codes, labels = code_maps["prior_codes"], code_maps.get("prior_labels")
    pick = distributed.deal(np.random.default_rng([cfg.seed, 2, step]).choice(
        len(train_codes), cfg.prior_batch_size, replace=len(train_codes) < cfg.prior_batch_size))
    return xp.asarray(train_codes[pick]), None if labels is None else labels[pick]


def prior_bits(prior, code_maps):
    """(bits per code on the un-augmented training maps, on the held-out maps). The first maps
    are those of the training slices themselves, one each (code_maps_for_the_prior)."""
    n_train = int(code_maps["prior_slices"].max()) + 1
    labels = code_maps.get("prior_labels")
    train = mean_bits(prior, code_maps["prior_codes"][:n_train],
                      None if labels is None else labels[:n_train])
    return train, mean_bits(prior, code_maps["held_codes"], code_maps.get("held_labels"))


def prior_step(prior, optimizer, codes, labels=None):
    """One step of the prior on a batch of code maps (and their levels): the cross-entropy of
    every code given the codes before it (and the level), nats per code, minimised. Returns that
    loss as a 0-d array on the device (the Run reads it to the host with the other steps'
    values, not now)."""
    loss = prior.loss(codes, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.data


def train_prior(run, state, code_maps, offset, step):
    """Stage 2 from prior step `step` to the end; global steps continue after the VQ-VAE's
    `offset`. Every epoch ends with the bits per code on the un-augmented training maps
    and on the held-out maps, logged and printed. Returns the prior steps done (with --profile N:
    times N steps, op by op, and returns their nn.Profile instead)."""
    cfg, prior, optimizer = run.config, state["prior"], state["prior_optimizer"]
    xp = nn.backend.array_module_for(run.device)
    train_codes = code_maps["prior_codes"]
    steps_per_epoch = prior_steps_per_epoch(cfg, len(train_codes))
    total = cfg.prior_epochs * steps_per_epoch

    def one_step(step, _):                        # the training step: the loop and --profile run it
        optimizer.param_groups[0]["lr"] = cosine_lr(cfg.prior_lr, step, total)
        loss = prior_step(prior, optimizer, *prior_batch(cfg, code_maps, step, xp))
        return {"nll_bits": bits_per_code(loss)}                  # a 0-d array, read later

    if cfg.profile:                               # --profile N: N of these steps, op by op
        return run.profile(one_step, ((s, None) for s in range(step, step + cfg.profile + 1)))
    levels = f", conditioned on {cfg.prior_levels} slice levels" if cfg.prior_levels else ""
    print(f"stage 2/3, PixelCNN prior: {total} steps of {cfg.prior_batch_size} of "
          f"{len(train_codes)} code maps ({cfg.augment_copies} augmented copies of each training "
          f"slice){levels}", flush=True)
    bits = None
    for epoch in range(step // steps_per_epoch, cfg.prior_epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, offset + step, offset + end, offset + total, cfg.prior_epochs)
        for step in range(step, end):
            run.record(offset + step + 1, **one_step(step, None))
            run.stop_if_requested(state, offset + step + 1, vqvae_steps=offset,
                                  prior_steps=step + 1, **code_maps)
        step = end
        bits = prior_bits(prior, code_maps)
        run.end_epoch(train_nll_bits=bits[0], held_out_nll_bits=bits[1])
        print(f"  prior bits per code: {bits[0]:.3f} on the training maps, {bits[1]:.3f} on the "
              "held-out maps", flush=True)
        pictures.plot_losses(run.history, run.path("prior_losses.png"),
                             title="PixelCNN prior: negative log-likelihood (bits per code)")
        run.save(state, offset + step, vqvae_steps=offset, prior_steps=step, **code_maps)
    train_bits, held_bits = bits or prior_bits(prior, code_maps)   # none left: measure them
    run.log("prior", step=offset + step, held_out_nll_bits=held_bits, train_nll_bits=train_bits)
    print(f"prior: held-out negative log-likelihood {held_bits:.3f} bits per code", flush=True)
    return step


# ---- stage 3: the prior draws code maps one code at a time, the decoder makes them slices -------

def sample_stage(run, model, prior, images):
    """--samples code maps (a conditional prior's: its levels evenly, lowest first), the slices
    they decode to, their pictures, and their scores against the run's `images`."""
    cfg = run.config
    side = settings.vqvae.code_side(cfg)
    print(f"stage 3/3: sampling {cfg.samples} code maps of {side}x{side} (one prior pass per "
          f"code) at temperature {cfg.temperature}"
          + (f", {cfg.prior_levels} levels evenly" if cfg.prior_levels else ""), flush=True)
    model.eval()
    decoded, codes = vqvae.generate(model, prior, cfg.samples, side, cfg.seed, cfg.temperature)
    pictures.save_images(decoded, run.path("samples"))
    pictures.save_grid(decoded, run.path("sample_grid.png"), nrow=8)
    shown = np.linspace(0, cfg.samples - 1, 8).round().astype(int)   # lowest to highest level
    pictures.image_rows(run.path("samples.png"), [
        {"images": codes[shown], "label": "sampled codes", "cmap": "tab20", "vmin": 0,
         "vmax": cfg.codes - 1, "interpolation": "nearest"},
        {"images": decoded[shown], "label": "decoded"}])
    write_report(run, decoded, images, temperature=cfg.temperature,
                 codes_used_in_samples=int(len(np.unique(codes))))     # and the pictures' page


# ---- the three stages ------------------------------------------------------------------------------

def main():
    run = experiment.start(settings.vqvae.flags(__doc__), model="vqvae",
                           continues=lambda config: config.stage in ("prior", "sample"),
                           resumable_flags=settings.vqvae.PRIOR_FLAGS,
                           check=settings.vqvae.check, memory=settings.vqvae.memory_estimate)
    cfg, device = run.config, run.device
    saved = run.checkpoint or {}

    # ---- data: every fifth slice is held out, for the reconstruction SSIM ------------------------
    dataset = experiment.load_images(cfg)
    train_images, held_images = data.split_held_out(dataset.images)
    held = data.to_float(held_images)[:, None]
    levels = data.slice_levels(dataset.files, cfg.prior_levels) if cfg.prior_levels else None
    labels = None if levels is None else data.split_held_out(levels)   # the prior's classes
    print(f"data: {dataset.source}; writing to {cfg.out}", flush=True)

    # ---- models and optimizers (an EMA codebook has no gradient, so no optimizer entry) -----------
    nn.manual_seed(cfg.seed)
    rng_dropout = np.random.default_rng([cfg.seed, 3])        # the prior's dropout masks
    model, prior = settings.vqvae.build(cfg, dropout_generator=rng_dropout)
    model.to(device)
    prior.to(device)
    optimizer = nn.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    prior_optimizer = nn.optim.Adam(prior.parameters(), lr=cfg.prior_lr)
    optimizer, prior_optimizer = map(distributed.averaging, (optimizer, prior_optimizer))   # mpiexec

    # ---- what a checkpoint holds (the prior joins it when stage 2 begins); --resume loads it ----
    state = {"vqvae": model, "vqvae_optimizer": optimizer,
             "rng_restart": np.random.default_rng([cfg.seed, 1])}   # dead-code restarts
    prior_state = {"prior": prior, "prior_optimizer": prior_optimizer, "rng_dropout": rng_dropout}
    if "prior" in saved:
        state.update(prior_state)
    run.restore(state)
    distributed.replicate(model, prior)           # under mpiexec: the same networks everywhere
    vqvae_steps, prior_steps = saved.get("vqvae_steps", 0), saved.get("prior_steps", 0)

    # ---- stage 1 (the VQ-VAE stays frozen once the prior has started learning its codes) ---------
    if cfg.stage in ("vqvae", "all") and prior_steps == 0:
        vqvae_steps = train_vqvae(run, state, train_images, held, vqvae_steps)
        if cfg.profile:
            return
        report_reconstructions(run, model, held, vqvae_steps)
    if cfg.stage == "vqvae":
        return
    if vqvae_steps == 0:
        raise experiment.ExperimentError(f"no trained VQ-VAE in {cfg.out}; run --stage vqvae first")

    # ---- stage 2: the prior learns the code maps of the training slices --------------------------
    if cfg.stage in ("prior", "all"):
        code_maps = code_maps_for_the_prior(run, model, train_images, held, labels)
        state.update(prior_state)
        prior_steps = train_prior(run, state, code_maps, vqvae_steps, prior_steps)
        if cfg.profile:
            return

    # ---- stage 3 ------------------------------------------------------------------------------------
    if cfg.stage in ("sample", "all"):
        if prior_steps == 0:
            raise experiment.ExperimentError(f"no trained prior in {cfg.out}; run --stage prior first")
        sample_stage(run, model, prior, dataset.images)


if __name__ == "__main__":
    experiment.main(main)
