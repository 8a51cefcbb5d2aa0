"""Train a VQ-VAE (van den Oord et al. 2017) and a gated PixelCNN prior over its codes; sample brains.

    python train_vqvae.py                     # all three stages, bundled MNI slices, CPU (~15 min, 2 cores)
    python train_vqvae.py --stage vqvae       # stage 1 only; later:  --stage prior,  --stage sample
    python train_vqvae.py --out runs/vqvae --resume                     # continue after Ctrl-C
    python train_vqvae.py --data /data/OASIS --split train --image-size 128 --downsamples 3 \\
        --channels 64 --codes 256 --steps-per-epoch 0 --device gpu      # OASIS on a GPU

Stage 1, vqvae: images -> encoder -> nearest codebook vectors -> decoder, trained on reconstruction
  MSE + codebook loss + 0.25 x commitment loss (EMA codebook and dead-code restarts by default).
  Every fifth slice (index % 5 == 4) is held out and only used to measure reconstruction SSIM.
Stage 2, prior: every training slice (and --augment-copies augmented copies of each) is encoded
  once into a code map; a gated PixelCNN learns p(code map) by cross-entropy (reported in bits
  per code, also on the held-out slices' maps).
Stage 3, sample: the PixelCNN draws --samples code maps, one position at a time (one network pass
  per code: 256 passes for a 16x16 map, which is why the defaults keep the map at 16x16), and the
  decoder turns them into images.

64x64 slices with 2 stride-2 layers give 16x16 codes. An "epoch" is --steps-per-epoch steps (the
bundled set is only ~106 training slices). --stage prior and --stage sample continue the run in
--out (they imply --resume); `python generate.py --checkpoint <out>/checkpoint.npz` samples too.

Writes to --out: checkpoint.npz (everything so far), metrics.jsonl, config.json, losses.png (the
current stage) and vqvae_losses.png / prior_losses.png, reconstructions/epoch_NNN.png (held-out
originals above their reconstructions), reconstructions.png (with per-image SSIM), codes.png
(held-out slices and their code maps), samples.png (sampled code maps above the decoded images),
samples/img_NNNN.png.
"""
import os
import sys

import numpy as np

import data
import experiment
from experiment import pictures
from evaluation import ssim
import nn
from models import vqvae
from models.pixelcnn import bits_per_code
from models.vqvae import code_counts, perplexity

STAGES = ("vqvae", "prior", "sample", "all")


def flags():
    p = experiment.parser(__doc__, out="runs/vqvae", image_size=64, batch_size=32, epochs=15,
                          steps_per_epoch=100)
    p.add_argument("--stage", choices=STAGES, default="all", help="default: %(default)s")
    g = p.add_argument_group("VQ-VAE (stage 1)")
    g.add_argument("--channels", type=int, default=32, help="encoder/decoder width (default: %(default)s)")
    g.add_argument("--res-channels", type=int, default=32, help="residual block width (default: %(default)s)")
    g.add_argument("--res-blocks", type=int, default=2, help="default: %(default)s")
    g.add_argument("--downsamples", type=int, default=2,
                   help="stride-2 layers: code map side = image size / 2^downsamples (default: %(default)s)")
    g.add_argument("--codes", type=int, default=256, help="codebook size K (default: %(default)s)")
    g.add_argument("--code-dim", type=int, default=32, help="code vector size D (default: %(default)s)")
    g.add_argument("--beta", type=float, default=0.25, help="commitment weight (default: %(default)s)")
    g.add_argument("--no-ema", dest="ema", action="store_false",
                   help="learn the codebook by its loss instead of moving averages")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate at the start; it decays along a cosine to 5%% of it (default: %(default)s)")
    g = p.add_argument_group("PixelCNN prior (stage 2)")
    g.add_argument("--prior-epochs", type=int, default=12, help="default: %(default)s")
    g.add_argument("--prior-channels", type=int, default=32, help="default: %(default)s")
    g.add_argument("--prior-layers", type=int, default=10, help="gated layers (default: %(default)s)")
    g.add_argument("--prior-lr", type=float, default=1e-3, help="default: %(default)s")
    g.add_argument("--augment-copies", type=int, default=8,
                   help="augmented copies of each training slice to encode for the prior "
                        "(default: %(default)s)")
    g = p.add_argument_group("sampling (stage 3)")
    g.add_argument("--samples", type=int, default=64, help="default: %(default)s")
    g.add_argument("--temperature", type=float, default=1.0, help="default: %(default)s")
    return p


def cosine_lr(base, step, total, floor=0.05):
    """Learning rate at `step` of `total`: from base down to floor * base along half a cosine."""
    return base * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * min(step / total, 1.0))))


def split_held_out(images_uint8):
    """(training, held-out): every fifth slice (index % 5 == 4) is held out."""
    index = np.arange(len(images_uint8))
    return images_uint8[index % 5 != 4], images_uint8[index % 5 == 4]


# ---- stage 1: the VQ-VAE ------------------------------------------------------------------------

def vqvae_step(model, optimizer, x, rng):
    """One step on batch x: loss = |x - x_hat|^2 + codebook + beta * commitment (paper eq. 3)."""
    reconstruction, vq = model(x)
    reconstruction_loss = ((reconstruction - x) ** 2).mean()
    loss = reconstruction_loss + vq["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    restarted = model.quantizer.update(vq["flat"], vq["codes"], rng)   # EMA, dead-code restarts
    values = {"reconstruction": reconstruction_loss.item(),
              "commitment": vq["commitment_loss"].item(), "perplexity": vq["perplexity"],
              "restarts": restarted}
    if not model.quantizer.ema:
        values["codebook"] = vq["codebook_loss"].item()
    return values, vq["codes"]


def reconstruct(model, images_float, batch_size=64):
    """Reconstructions (clipped to [-1, 1]) and code maps of float images (N, 1, S, S), NumPy."""
    model.eval()
    outputs, codes = [], []
    xp = nn.backend.array_module_for(model.quantizer.codebook.device)
    for i in range(0, len(images_float), batch_size):
        c = model.encode(nn.Tensor(xp.asarray(images_float[i:i + batch_size])))
        outputs.append(np.clip(model.decode(c).numpy(), -1, 1))
        codes.append(nn.backend.to_numpy(c))
    model.train()
    return np.concatenate(outputs), np.concatenate(codes)


def held_out_ssim(model, held):
    """Per-image SSIM of the held-out slices' reconstructions, the reconstructions, the codes."""
    reconstruction, codes = reconstruct(model, held)
    return ssim.ssim_batch(reconstruction[:, 0], held[:, 0], data_range=2.0), reconstruction, codes


def train_vqvae(run, state, model, optimizer, train_images, held):
    cfg = run.config
    loader = data.BatchLoader(train_images, cfg.batch_size, seed=cfg.seed, device=run.device)
    steps_per_epoch = cfg.steps_per_epoch or len(loader)
    total, step = cfg.epochs * steps_per_epoch, state["vqvae_steps"]
    rng = np.random.default_rng([cfg.seed, 1])                       # dead-code restarts
    if "rng_restart" in state:
        experiment.set_rng_state(rng, state["rng_restart"])
    print(f"stage 1/3, VQ-VAE: {total} steps of {cfg.batch_size} slices "
          f"({len(train_images)} training, {len(held)} held out) on {run.device}", flush=True)
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, step, end, total)
        used = np.zeros(cfg.codes, dtype=np.int64)
        for step, batch in experiment.stream(loader, step, end):
            optimizer.param_groups[0]["lr"] = cosine_lr(cfg.lr, step, total)
            values, codes = vqvae_step(model, optimizer, nn.Tensor(batch), rng)
            used += code_counts(codes, cfg.codes)
            run.record(step + 1, **values)
            if run.stop_requested:
                state.update(vqvae_steps=step + 1, rng_restart=experiment.rng_state(rng))
                save(run, state, model=model, optimizer=optimizer)
                raise run.interrupted(step + 1)
        step = end
        ssim, reconstruction, _ = held_out_ssim(model, held)
        pictures.save_grid(np.concatenate([held[:8], reconstruction[:8]]),
                         run.path("reconstructions", f"epoch_{epoch + 1:03d}.png"), nrow=8)
        run.end_epoch(held_out_ssim=float(ssim.mean()), codes_used=int((used > 0).sum()),
                      epoch_perplexity=perplexity(used))
        pictures.plot_losses(run.history, run.path("vqvae_losses.png"), title="VQ-VAE: losses per step")
        state.update(vqvae_steps=step, rng_restart=experiment.rng_state(rng))
        save(run, state, model=model, optimizer=optimizer)

    ssim, reconstruction, codes = held_out_ssim(model, held)
    run.log("reconstruction", step=run_step(state), held_out_ssim_mean=float(ssim.mean()),
            held_out_ssim_std=float(ssim.std()), held_out_ssim_min=float(ssim.min()),
            held_out_codes_used=int(len(np.unique(codes))), held_out_perplexity=perplexity(
                code_counts(codes, cfg.codes)))
    plot_reconstructions(held, reconstruction, ssim, codes, run.path("reconstructions.png"),
                         run.path("codes.png"))
    print(f"held-out reconstruction SSIM {ssim.mean():.3f} +- {ssim.std():.3f} "
          f"(min {ssim.min():.3f}); {len(np.unique(codes))} of {cfg.codes} codes in use", flush=True)


# ---- stage 2: the PixelCNN prior over code maps -------------------------------------------------

def encode_training_set(cfg, model, train_images, device):
    """Code maps of every training slice, then of --augment-copies augmented copies of each."""
    codes = []
    for copy in range(cfg.augment_copies + 1):
        loader = data.BatchLoader(train_images, 64, seed=cfg.seed, device=device,
                                  augment=copy > 0, drop_last=False)
        for batch in loader.epoch(copy):
            codes.append(nn.backend.to_numpy(model.encode(nn.Tensor(batch))))
    return np.concatenate(codes)


def mean_bits(prior, codes, device, batch_size=64):
    """Negative log-likelihood of code maps under the prior, in bits per code."""
    xp = nn.backend.array_module_for(device)
    total = 0.0
    with nn.no_grad():
        for i in range(0, len(codes), batch_size):
            chunk = codes[i:i + batch_size]
            total += prior.loss(xp.asarray(chunk)).item() * len(chunk)
    return bits_per_code(total / len(codes))


def train_prior(run, state, model, prior, optimizer):
    cfg = run.config
    xp = nn.backend.array_module_for(run.device)
    train_codes, held_codes = state["prior_codes"], state["held_codes"]
    steps_per_epoch = cfg.steps_per_epoch or -(-len(train_codes) // cfg.batch_size)
    total, step = cfg.prior_epochs * steps_per_epoch, state["prior_steps"]
    offset = state["vqvae_steps"]                  # global step = VQ-VAE steps + prior steps
    print(f"stage 2/3, PixelCNN prior: {total} steps on {len(train_codes)} code maps "
          f"({cfg.augment_copies} augmented copies of each training slice)", flush=True)
    for epoch in range(step // steps_per_epoch, cfg.prior_epochs):
        end = (epoch + 1) * steps_per_epoch
        run.begin_epoch(epoch, offset + step, offset + end, offset + total, cfg.prior_epochs)
        for step in range(step, end):
            pick = np.random.default_rng([cfg.seed, 2, step]).choice(
                len(train_codes), cfg.batch_size, replace=len(train_codes) < cfg.batch_size)
            optimizer.param_groups[0]["lr"] = cosine_lr(cfg.prior_lr, step, total)
            loss = prior.loss(xp.asarray(train_codes[pick]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.record(offset + step + 1, nll_bits=bits_per_code(loss.item()))
            if run.stop_requested:
                state["prior_steps"] = step + 1
                save(run, state, model=model, prior=prior, prior_optimizer=optimizer)
                raise run.interrupted(offset + step + 1)
        step = end
        run.end_epoch(held_out_nll_bits=mean_bits(prior, held_codes, run.device))
        pictures.plot_losses(run.history, run.path("prior_losses.png"),
                           title="PixelCNN prior: negative log-likelihood (bits per code)")
        state["prior_steps"] = step
        save(run, state, model=model, prior=prior, prior_optimizer=optimizer)


# ---- stage 3: sampling ---------------------------------------------------------------------------

def draw_samples(run, state, model, prior, train_images):
    cfg = run.config
    side = vqvae.code_side(cfg)
    print(f"stage 3/3: sampling {cfg.samples} code maps of {side}x{side} (one prior pass per "
          f"code)", flush=True)
    model.eval()
    decoded, codes = vqvae.generate(model, prior, cfg.samples, side, cfg.seed, cfg.temperature)
    pictures.save_images(decoded, run.path("samples"))
    plot_samples(codes, decoded, cfg.codes, run.path("samples.png"))
    report = ssim.generation_report(decoded, data.to_float(train_images), data_range=2.0,
                                       seed=cfg.seed)
    run.log("report", step=run_step(state), temperature=cfg.temperature,
            codes_used_in_samples=int(len(np.unique(codes))), **report)
    ssim.print_report(report)
    print(f"pictures in {run.out}", flush=True)


# ---- pictures -------------------------------------------------------------------------------------

def _figure(rows, cols, scale=1.1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(cols * scale, rows * scale * 1.1), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return figure, axes


def plot_reconstructions(held, reconstruction, ssim, codes, path, codes_path, n=8):
    figure, axes = _figure(2, n)
    for i in range(min(n, len(held))):
        axes[0, i].imshow(held[i, 0], cmap="gray", vmin=-1, vmax=1)
        axes[1, i].imshow(reconstruction[i, 0], cmap="gray", vmin=-1, vmax=1)
        axes[1, i].set_title(f"SSIM {ssim[i]:.3f}", fontsize=8)
    axes[0, 0].set_title("held-out originals (top)", fontsize=8, loc="left")
    figure.tight_layout()
    figure.savefig(path)
    figure, axes = _figure(2, n)
    for i in range(min(n, len(held))):
        axes[0, i].imshow(held[i, 0], cmap="gray", vmin=-1, vmax=1)
        axes[1, i].imshow(codes[i], cmap="tab20", interpolation="nearest")
    figure.tight_layout()
    figure.savefig(codes_path)


def plot_samples(codes, decoded, num_codes, path, n=8):
    figure, axes = _figure(2, n)
    for i in range(min(n, len(codes))):
        axes[0, i].imshow(codes[i], cmap="tab20", vmin=0, vmax=num_codes - 1,
                          interpolation="nearest")
        axes[1, i].imshow(decoded[i, 0], cmap="gray", vmin=-1, vmax=1)
    axes[0, 0].set_title("sampled codes", fontsize=8, loc="left")
    axes[1, 0].set_title("decoded", fontsize=8, loc="left")
    figure.tight_layout()
    figure.savefig(path)


# ---- the three stages ------------------------------------------------------------------------------

def run_step(state):
    return int(state.get("vqvae_steps", 0) + state.get("prior_steps", 0))


def save(run, state, model, optimizer=None, prior=None, prior_optimizer=None):
    """Write everything so far into <out>/checkpoint.npz (atomically, by experiment.py)."""
    entries = {"vqvae": model.state_dict()}
    if optimizer is not None:
        entries["vqvae_optimizer"] = optimizer.state_dict()
    if prior is not None:
        entries["prior"] = prior.state_dict()
        entries["prior_optimizer"] = prior_optimizer.state_dict()
    state.update(entries)
    steps_per_epoch = max(1, run.config.steps_per_epoch)
    state.update(step=run_step(state), epoch=run_step(state) // steps_per_epoch)
    run.save(state)


def main():
    argv = sys.argv[1:]
    stage = flags().parse_known_args(argv)[0].stage
    if stage in ("prior", "sample") and "--resume" not in argv:
        argv.append("--resume")                  # these stages continue the run in --out
    run = experiment.start(flags(), model="vqvae", argv=argv, resumable_flags=(
        "stage", "prior_epochs", "prior_channels", "prior_layers", "prior_lr", "augment_copies",
        "samples", "temperature"))
    cfg, device = run.config, run.device
    state = dict(run.checkpoint or {})
    state.setdefault("vqvae_steps", 0)
    state.setdefault("prior_steps", 0)

    dataset = experiment.load_images(cfg)
    train_images, held_images = split_held_out(dataset.images)
    held = data.to_float(held_images)[:, None]
    print(f"data: {dataset.source}; writing to {cfg.out}", flush=True)

    nn.manual_seed(cfg.seed)
    model, prior = vqvae.build(cfg)
    model.to(device)
    prior.to(device)
    optimizer = nn.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    prior_optimizer = nn.optim.Adam(prior.parameters(), lr=cfg.prior_lr)
    restore(state, model, optimizer, prior, prior_optimizer)

    # stage 1 (the VQ-VAE stays frozen once the prior has started learning its codes)
    if cfg.stage in ("vqvae", "all") and state["prior_steps"] == 0:
        train_vqvae(run, state, model, optimizer, train_images, held)
    if cfg.stage == "vqvae":
        return
    if state["vqvae_steps"] == 0:
        raise experiment.ExperimentError(f"no trained VQ-VAE in {cfg.out}; run --stage vqvae first")

    # stage 2
    if cfg.stage in ("prior", "all"):
        if "prior_codes" not in state:              # first time here: encode the data once
            model.eval()
            state["prior_codes"] = encode_training_set(cfg, model, train_images, device)
            state["held_codes"] = nn.backend.to_numpy(model.encode(nn.Tensor(held).to(device)))
            state["vqvae_history"] = {k: np.asarray(v) for k, v in run.history.items()}
            run.history = {"step": []}              # from here on losses.png shows the prior
        train_prior(run, state, model, prior, prior_optimizer)
        bits = mean_bits(prior, state["held_codes"], device)
        run.log("prior", step=run_step(state), held_out_nll_bits=bits,
                train_nll_bits=mean_bits(prior, state["prior_codes"][:len(train_images)], device))
        print(f"prior: held-out negative log-likelihood {bits:.3f} bits per code", flush=True)

    # stage 3
    if cfg.stage in ("sample", "all"):
        if state["prior_steps"] == 0:
            raise experiment.ExperimentError(f"no trained prior in {cfg.out}; run --stage prior first")
        draw_samples(run, state, model, prior, train_images)


def restore(state, model, optimizer, prior, prior_optimizer):
    """Load what a resumed checkpoint holds; flags that do not fit it give a clear error."""
    try:
        if "vqvae" in state:
            model.load_state_dict(state["vqvae"])
            optimizer.load_state_dict(state["vqvae_optimizer"])
        if "prior" in state:
            prior.load_state_dict(state["prior"])
            prior_optimizer.load_state_dict(state["prior_optimizer"])
    except nn.StateDictError as error:
        raise experiment.ExperimentError(f"the checkpoint does not fit these settings ({error}); "
                                         "keep the prior's flags of the run, or use a new --out")


if __name__ == "__main__":
    experiment.main(main)
