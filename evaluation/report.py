"""report.html: one page per run, written at the end of training, that opens in any browser offline.

    report.write_report(run, samples, images)   # the last line of a training script
    report.build_report(folder)         # (re)build <folder>/report.html; `python compare.py --report`

write_report scores the run's final samples once, against the run's own real images (the held-out
rule and the columns of evaluation/comparison.py: NN-SSIM against the training images, every
fifth image held out as the "as good as real" reference), appends them to metrics.jsonl as one
"sample_quality" record, prints them as one line, draws memorisation.png, and then builds the
page: the console, metrics.jsonl and report.html show the same figures.  build_report only
reads the run folder and writes report.html into it.  The page shows, from top to bottom:

    the run in one line, the command and the settings (config.json)
    the sample-quality table: this run against held-out real images (the "as good as real" row)
    every other record of metrics.jsonl (final SSIM report, phases, reconstruction, prior, ...)
    the sample grids over the epochs, the loss curves, the memorisation figure
    every other picture the run wrote (reconstructions, code maps, per-resolution grids,
    embeddings), and the per-epoch log

Every number on the page comes from metrics.jsonl and is marked with the record (line number,
from 1) and the field it was read from, e.g. <span data-record="5" data-field="loss_d">0.693</span>,
so a test can check each one against the file.  Pictures are <img> tags with paths relative to
the page (the PNGs beside it in the run folder); the page has no JavaScript and fetches nothing.
"""
import datetime
import html
import json
import os
import re

from PIL import Image

import data
from evaluation.comparison import (COLUMNS, MAX_TRAIN, SAW_HELDOUT_NOTE, Judge, minimum_images,
                                   real_sets, saw_heldout)
from evaluation.memorisation import plot_memorisation
from evaluation.ssim import WIN as SSIM_WINDOW
from experiment.files import atomic_write

REPORT, METRICS, CONFIG = "report.html", "metrics.jsonl", "config.json"
MEMORISATION = "memorisation.png"
EPOCH_GRIDS_SHOWN = 12                   # evenly spaced epochs per folder of epoch_NNN.png grids
EPOCH_GRID = re.compile(r"(^|/)epoch_(\d+)\.png$")
SINGLE_IMAGE = re.compile(r"(^|/)img_\d+\.png$")
SKIPPED_FOLDERS = ("cache",)

STYLE = """
body { font-family: sans-serif; max-width: 1250px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.reference { font-weight: bold; background: #f3f6fa; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; }
img { max-width: 100%; max-height: 480px; }
div.wide { overflow-x: auto; }
img.grid { image-rendering: pixelated; }
code, pre { background: #f4f4f4; padding: 0 0.2em; }
pre { padding: 0.5em; white-space: pre-wrap; }
.note { color: #555; font-size: 0.9em; }
"""


# ---- the end of training: score the final samples once, log them, build the page -------------

def write_report(run, samples=None, images=None, seed=0, **extra):
    """The last call of a training script. samples: the run's final samples (M, 1, S, S) in
    [-1, 1], scored ONCE (score_run: the held-out rule of evaluation/comparison.py) against
    `images`, the run's real images (uint8 (N, S, S), in the data's order; None: loaded again from
    the run's settings). The scores, with `extra` (e.g. the resolution reached), go into
    metrics.jsonl as one "sample_quality" record and are printed as one line; then the page is
    built (samples None: only the page). Returns the record (None without samples)."""
    record = None
    if samples is not None:
        record, figure = score_run(vars(run.config), run.model, samples, seed, images=images,
                                   cache_dir=os.path.join(run.out, "cache"))
        record.update(extra)
        if figure is not None:
            plot_memorisation(*figure, os.path.join(run.out, MEMORISATION),
                              title=f"{run.model} samples")
        run.log("sample_quality", step=run.saved_step, **record)
        print(scores_line(record), flush=True)
    print(f"report: {build_report(run.out)}", flush=True)
    return record


def scores_line(record):
    """The one line every run ends with: its samples' scores next to the held-out real slices'."""
    if "skipped" in record:
        return f"samples not scored: {record['skipped']}"
    return (f"nearest-neighbour SSIM {record['nn_ssim']:.3f} (course target >= 0.6; held-out "
            f"real slices {record['heldout_nn_ssim']:.3f}); pairwise SSIM among samples "
            f"{record['pairwise_ssim']:.3f} vs among real slices "
            f"{record['heldout_pairwise_ssim']:.3f} (much higher = mode collapse); precision "
            f"{record['precision']:.2f}, recall {record['recall']:.2f}, coverage "
            f"{record['coverage']:.2f} (docs/metrics.md)")


def score_run(settings, model, samples, seed=0, images=None, cache_dir=None):
    """(record, figure): the sample-quality record of a run's samples against the run's own data
    (the held-out rule of evaluation/comparison.py), and the arguments of plot_memorisation
    (None when there are too few images; the record then says why under "skipped").
    images: the run's real images (uint8, at the samples' size); None: loaded from `settings`."""
    size = int(samples.shape[-1])
    record = {"n_samples": int(len(samples)), "image_size": size, "seed": int(seed),
              "saw_heldout": saw_heldout(model)}
    if len(samples) < minimum_images():
        record["skipped"] = (f"the sample-quality metrics need at least {minimum_images()} "
                             f"samples; this run drew {len(samples)} (raise --samples)")
        return record, None
    if size < SSIM_WINDOW:
        record["skipped"] = f"images of {size}x{size} are smaller than the SSIM window"
        return record, None
    if images is None or images.shape[-1] != size:
        images = data.load_images(settings.get("data"), image_size=size,
                                  split=settings.get("split", "all"),
                                  classes=settings.get("classes"),
                                  strict=settings.get("strict", False), cache_dir=cache_dir).images
    try:
        train, heldout = real_sets(images, len(samples),
                                   max_train=settings.get("metrics_real", MAX_TRAIN), seed=seed)
    except ValueError as error:
        record["skipped"] = str(error)
        return record, None
    judge = Judge(train, heldout, seed=seed)
    row, copying = judge.score(samples)
    record.update(row)
    record.update({"heldout_" + key: value for key, value in judge.reference.items()})
    record["notes"] = judge.describe()
    return record, (copying, samples, train)


# ---- reading a run folder ------------------------------------------------------------------------

def read_records(folder):
    """metrics.jsonl as a list of (line number from 1, record); unreadable lines are skipped."""
    records = []
    path = os.path.join(folder, METRICS)
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append((line_number, record))
    return records


def read_settings(folder, records):
    """config.json, or the settings of the "start" record when it is missing."""
    path = os.path.join(folder, CONFIG)
    if os.path.exists(path):
        try:
            with open(path) as f:
                return json.load(f)
        except ValueError:
            pass
    starts = [r for _, r in records if r.get("event") == "start"]
    return starts[0].get("config", {}) if starts else {}


def natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def find_pictures(folder):
    """Every PNG under the folder (paths relative to it, with "/"), except the cache."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS)
        for name in files:
            if name.lower().endswith(".png"):
                found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found, key=natural_key)


def group_pictures(paths):
    """{"epochs": {folder: [paths]}, "losses", "memorisation", "singles", "other": [paths]}."""
    groups = {"epochs": {}, "losses": [], "memorisation": [], "singles": [], "other": []}
    for path in paths:
        if EPOCH_GRID.search(path):
            groups["epochs"].setdefault(os.path.dirname(path), []).append(path)
        elif SINGLE_IMAGE.search(path):
            groups["singles"].append(path)
        elif "losses" in os.path.basename(path):
            groups["losses"].append(path)
        elif os.path.basename(path) == MEMORISATION:
            groups["memorisation"].append(path)
        else:
            groups["other"].append(path)
    return groups


def evenly_spaced(items, count):
    """At most `count` items, first and last included, evenly spaced."""
    if len(items) <= count:
        return list(items)
    picks = sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)})
    return [items[i] for i in picks]


# ---- HTML pieces ---------------------------------------------------------------------------------

def esc(value):
    return html.escape(str(value), quote=True)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value, line, field, digits=4):
    """A number as text, marked with where it came from in metrics.jsonl."""
    if isinstance(value, int):
        text = str(value)
    elif value != value or value in (float("inf"), float("-inf")):
        text = str(value)
    else:
        text = f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return f'<span data-record="{line}" data-field="{esc(field)}">{text}</span>'


def cell(value, line, field):
    """A table cell for any value of a record (numbers marked, other values as text)."""
    if is_number(value):
        return f"<td>{number(value, line, field)}</td>"
    return f"<td>{'' if value is None else esc(value)}</td>"


def flat_fields(record, prefix=""):
    """The record's fields as (name, value), nested dicts flattened as parent.child."""
    out = []
    for key, value in record.items():
        if isinstance(value, dict):
            out += flat_fields(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def records_table(records, skip=("event", "time", "config", "command", "notes")):
    """One table for records of one kind: a row per record, a column per field (one record: a
    row per field)."""
    fields = []
    for _, record in records:
        for name, _ in flat_fields(record):
            if name not in skip and name not in fields:
                fields.append(name)
    if len(records) == 1:
        line, values = records[0][0], dict(flat_fields(records[0][1]))
        rows = "".join(f"<tr><td>{esc(name)}</td>{cell(values[name], line, name)}</tr>"
                       for name in fields)
        return f"<table>{rows}</table>"
    rows = []
    for line, record in records:
        values = dict(flat_fields(record))
        rows.append("<tr>" + "".join(cell(values.get(name), line, name) for name in fields)
                    + "</tr>")
    head = "<tr>" + "".join(f"<th>{esc(name)}</th>" for name in fields) + "</tr>"
    return f'<div class="wide"><table>{head}{"".join(rows)}</table></div>'


def thumbnail_width(folder, path, max_width=400, max_height=200):
    """The width at which a picture fits in max_width x max_height (small grids are enlarged)."""
    with Image.open(os.path.join(folder, path)) as picture:
        width, height = picture.size
    return round(width * min(max_width / width, max_height / height))


def figure(path, caption, width=None, grid=False):
    style = f' style="width:{width}px"' if width else ""
    kind = ' class="grid"' if grid else ""
    return (f'<figure><img src="{esc(path)}" alt="{esc(caption)}"{kind}{style}>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def sample_quality_section(line, record):
    """This run's row under the held-out reference row, the columns of evaluation/comparison.py."""
    if "skipped" in record:
        return f"<p>Not scored: {esc(record['skipped'])}.</p>"
    head = "<tr><th></th>" + "".join(f"<th>{esc(title)}</th>" for _, title, _ in COLUMNS) + "</tr>"
    head += ('<tr class="note"><td>measured on</td>'
             + "".join(f"<td>{esc(space)}</td>" for _, _, space in COLUMNS) + "</tr>")
    rows = []
    for name, prefix, css in (("real held-out vs training (reference)", "heldout_", "reference"),
                              (f"this run's {record.get('n_samples')} samples", "", "")):
        cells = []
        for key, _, _ in COLUMNS:
            value = record.get(prefix + key)
            text = number(value, line, prefix + key) if is_number(value) else ""
            if key == "kid" and is_number(record.get(prefix + "kid_std")):
                text += " &plusmn; " + number(record[prefix + "kid_std"], line, prefix + "kid_std")
            cells.append(f"<td>{text}</td>")
        rows.append(f'<tr class="{css}"><td>{esc(name)}</td>{"".join(cells)}</tr>')
    notes = list(record.get("notes", []))
    if record.get("saw_heldout"):
        notes.append(SAW_HELDOUT_NOTE)
    notes_html = "".join(f"<li>{esc(note)}</li>" for note in notes)
    return (f"<table>{head}{''.join(rows)}</table>"
            f'<ul class="note">{notes_html}</ul>'
            '<p class="note">What each column means and what values to expect: '
            "docs/metrics.md in the repository.</p>")


def events_of(records, kind):
    """The (line, record) pairs of one kind of event."""
    return [(line, record) for line, record in records if record.get("event") == kind]


def summary(folder, model, settings, records):
    """The run in one line: model, folder, steps, time, device, data."""
    parts = [f"<b>{esc(model)}</b> run in <code>{esc(os.path.abspath(folder))}</code>"]
    epochs = events_of(records, "epoch")
    if epochs and is_number(epochs[-1][1].get("step")):
        line, last = epochs[-1]
        parts.append(f"{number(last['step'], line, 'step')} training steps")
        if is_number(last.get("elapsed_s")):
            parts.append(f"{number(last['elapsed_s'], line, 'elapsed_s')} s of training")
    starts = events_of(records, "start")
    if starts:
        start = starts[0][1]
        when = datetime.datetime.fromtimestamp(start.get("time", 0)).strftime("%Y-%m-%d %H:%M")
        parts.append(f"started {when} on {esc(start.get('device', '?'))}")
    size = esc(settings.get("image_size", "?"))
    parts.append(f"data: {esc(settings.get('data') or 'the bundled MNI slices')} "
                 f"(split {esc(settings.get('split', '?'))}, {size}x{size})")
    return "<p>" + "; ".join(parts) + ".</p>"


def command_section(folder, settings, records):
    """The commands that started and continued the run (as the start and resume records of
    metrics.jsonl hold them) and every setting."""
    sessions = [r for _, r in records if r.get("event") in ("start", "resume")]
    commands = [r["command"] for r in sessions if r.get("command")]
    html_parts = ["<h2>Command and settings</h2>"]
    if commands:
        text = "\n".join(commands)                # the first started it, the others resumed it
        html_parts.append(f"<pre>{esc(text)}</pre>")
    else:
        html_parts.append('<p class="note">The command line was not recorded (a run from before '
                          "metrics.jsonl held it); the settings below are the run's complete "
                          "configuration.</p>")
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(json.dumps(v))}</td></tr>"
                   for k, v in settings.items())
    html_parts.append(f"<details><summary>all {len(settings)} settings (config.json)</summary>"
                      f"<table>{rows}</table></details>")
    html_parts.append(f'<p class="note">Rebuild this page: <code>python compare.py --report '
                      f"{esc(folder)}</code></p>")
    return html_parts


def metrics_section(folder, records):
    """The sample-quality table, then one table per other kind of record of metrics.jsonl."""
    html_parts = ["<h2>Metrics</h2>"]
    quality = events_of(records, "sample_quality")
    if quality:
        line, record = quality[-1]
        step = number(record["step"], line, "step") if is_number(record.get("step")) else "?"
        html_parts.append(f"<h3>Sample quality at step {step}</h3>")
        html_parts.append(sample_quality_section(line, record))
    else:
        html_parts.append(f"<p>This run logged no sample-quality record (it has not finished, or "
                          "was trained before report.html existed). Score it with <code>python "
                          f"compare.py {esc(folder)} --out {esc(folder.rstrip('/'))}-scores"
                          "</code>.</p>")
    kinds = []
    for _, record in records:
        kind = record.get("event")
        if kind not in ("start", "epoch", "sample_quality") and kind not in kinds:
            kinds.append(kind)
    for kind in kinds:
        html_parts.append(f"<h3>{esc(kind)}</h3>")
        html_parts.append(records_table(events_of(records, kind)))
    return html_parts


def pictures_section(folder, groups):
    """Grids over the epochs, loss curves, the memorisation figure, every other picture."""
    html_parts = []
    if groups["epochs"]:
        html_parts.append("<h2>Over the epochs</h2>")
        for parent, paths in groups["epochs"].items():
            shown = evenly_spaced(paths, EPOCH_GRIDS_SHOWN)
            html_parts.append(f"<h3>{esc(parent or 'grids')}/ ({len(shown)} of {len(paths)} "
                              "epochs)</h3>")
            html_parts += [figure(p, f"epoch {int(EPOCH_GRID.search(p).group(2))}",
                                  thumbnail_width(folder, p), True) for p in shown]
    if groups["losses"]:
        html_parts.append("<h2>Loss curves</h2>")
        html_parts += [figure(p, p, 600) for p in groups["losses"]]
    if groups["memorisation"]:
        html_parts.append("<h2>Memorisation</h2>")
        html_parts.append('<p class="note">Left: distance from each image to its nearest '
                          "training image (grey: held-out real images; red: samples). Right: the "
                          "most-copied samples above their nearest training images.</p>")
        html_parts += [figure(p, p) for p in groups["memorisation"]]
    if groups["other"]:
        html_parts.append("<h2>The model's own pictures</h2>")
        html_parts += [figure(p, p, None, True) for p in groups["other"]]
    if groups["singles"]:
        folders = sorted({os.path.dirname(p) or "." for p in groups["singles"]})
        html_parts.append(f'<p class="note">Also {len(groups["singles"])} single images in '
                          f"{esc(', '.join(f + '/' for f in folders))} (not shown).</p>")
    return html_parts


def page(folder):
    """The whole report.html of a run folder, as a string."""
    records = read_records(folder)
    settings = read_settings(folder, records)
    starts = events_of(records, "start")
    model = (starts[0][1].get("model") if starts else None) or "run"
    body = [f"<h1>{esc(model)}: {esc(os.path.basename(os.path.abspath(folder)))}</h1>",
            summary(folder, model, settings, records)]
    body += command_section(folder, settings, records)
    body += metrics_section(folder, records)
    body += pictures_section(folder, group_pictures(find_pictures(folder)))
    epochs = events_of(records, "epoch")
    if epochs:
        body.append("<h2>Per-epoch log</h2>")
        body.append(f"<details><summary>{len(epochs)} epoch records (metrics.jsonl)</summary>"
                    f"{records_table(epochs)}</details>")
    written = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body.append(f'<p class="note">Written {written} from {METRICS}, {CONFIG} and the PNG files '
                "beside this page.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(model)} run: {esc(folder)}</title><style>{STYLE}</style></head>\n"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")


def build_report(folder):
    """Write <folder>/report.html from the run's files (only that file is written, atomically:
    a reader sees the old page or the new one)."""
    text = page(folder)
    path = os.path.join(folder, REPORT)
    with atomic_write(path, "wb") as f:
        f.write(text.encode("utf-8"))
    return path
