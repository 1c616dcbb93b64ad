"""Every plot ASiT draws. Each function takes data or a Prediction / evaluation report and returns a
matplotlib Figure (or Axes), so notebooks, ``make demo`` and tests draw the same pictures.

Colours and line styles are chosen to read in light and dark notebook themes.
"""

from __future__ import annotations

from contextlib import contextmanager

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

# ---- data plots (clips per class/split, durations, waveforms, spectrograms, players) ------------------------

SPLIT_ORDER = ("train", "val", "test")
SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def _manifest_of(data):
    """A manifest DataFrame from an ``AudioCache``, a ``PreprocessReport`` (its ``kept``) or a DataFrame."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    for attr in ("manifest", "kept"):
        if hasattr(data, attr):
            return getattr(data, attr)
    raise TypeError(f"expected an AudioCache, a PreprocessReport or a manifest DataFrame, got {type(data).__name__}")


def _class_order(df) -> list[str]:
    """Classes grouped by category, every category one block: ASiT's four categories first in their own order
    (Animals, Birds, Vehicles, Environmental: the same in 01's raw manifest, 02's cache and 04's confusion), other
    categories after them (by first label id, else alphabetical); label-id order inside a category when known,
    else alphabetical."""
    from .data import ASIT_CATEGORIES

    rows = df.drop_duplicates("label")
    key = ["label_id"] if "label_id" in rows else ["label"]
    if "category" in rows:
        rows = rows.assign(_cat=rows["category"].fillna("").astype(str))
        others = rows[~rows["_cat"].isin(ASIT_CATEGORIES)]
        if "label_id" in rows:
            others = others.groupby("_cat")["label_id"].min().sort_values().index.tolist()
        else:
            others = sorted(others["_cat"].unique())
        ranks = {c: i for i, c in enumerate([c for c in ASIT_CATEGORIES if c in set(rows["_cat"])] + others)}
        rows = rows.assign(_cat_rank=rows["_cat"].map(ranks))
        key = ["_cat_rank"] + key
    return rows.sort_values(key)["label"].tolist()


def _category_blocks(categories: list[str]) -> list[tuple[str, int, int]]:
    """``(category, first, last + 1)`` runs of equal neighbours in a category list."""
    blocks = []
    for i, cat in enumerate(categories):
        if blocks and blocks[-1][0] == cat:
            blocks[-1] = (cat, blocks[-1][1], i + 1)
        else:
            blocks.append((cat, i, i + 1))
    return blocks


def plot_class_counts(data, *, theme: str = "light"):
    """Clips per class, one bar per split (seaborn), classes grouped by category with a divider and the
    category's name above each block.

    Args:
        data: an ``AudioCache``, a ``PreprocessReport`` or a manifest DataFrame (``label``; ``split``,
            ``category``, ``label_id`` optional).
    """
    import seaborn as sns

    df = _manifest_of(data).copy()
    if df.empty:
        raise ValueError("the manifest is empty: nothing to plot")
    if "split" not in df:
        df["split"] = "all"
    order = _class_order(df)
    splits = [s for s in SPLIT_ORDER if s in set(df["split"])] + sorted(set(df["split"]) - set(SPLIT_ORDER))
    with _theme(theme):
        fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(order) + 2), 4.4), constrained_layout=True)
        sns.countplot(data=df, x="label", hue="split", order=order, hue_order=splits, ax=ax,
                      palette={s: SPLIT_COLORS.get(s, "#7f7f7f") for s in splits})
        ax.set(xlabel="", ylabel="clips")
        ax.set_title(f"clips per class and split ({len(df)} clips, {len(order)} classes)", pad=22)
        ax.tick_params(axis="x", labelrotation=90)
        ax.margins(y=0.12)
        if "category" in df:
            cats = df.drop_duplicates("label").set_index("label")["category"].reindex(order).fillna("").tolist()
            for cat, start, end in _category_blocks(cats):
                if start:
                    ax.axvline(start - 0.5, color="#666666", lw=1.0, ls="--")
                ax.text((start + end - 1) / 2, 1.01, cat, transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=9, fontweight="bold")
        # the legend sits outside the axes, so it never covers a bar
        if len(splits) > 1:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.005, 1.0), title="split", frameon=False)
        elif ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.grid(axis="y", alpha=0.3)
    return fig


def plot_durations(data, *, clip_seconds: float | None = 5.0, bins: int = 40, theme: str = "light"):
    """Histogram of the source files' durations (seconds), with the cache's clip length marked.

    Files longer than ``clip_seconds`` are cropped in the cache (their loudest window), shorter ones zero-padded.
    """
    import seaborn as sns

    df = _manifest_of(data)
    if "duration_s" not in df or df["duration_s"].dropna().empty:
        raise ValueError("no durations in this manifest (preprocess fills duration_s)")
    with _theme(theme):
        fig, ax = plt.subplots(figsize=(7, 3.4), constrained_layout=True)
        sns.histplot(df["duration_s"].dropna(), bins=bins, ax=ax, color="#1f77b4")
        if clip_seconds:
            ax.axvline(clip_seconds, color="#d62728", ls="--", lw=1.5, label=f"clip length {clip_seconds:g} s")
            ax.legend()
        ax.set(xlabel="duration (s)", ylabel="files", title=f"file durations (median {df['duration_s'].median():.2f} s)")
        ax.grid(alpha=0.3)
    return fig


def _example_rows(df, indices, n: int, seed: int, labels=None):
    """Rows to show: ``indices`` as given; else one clip of each of ``labels`` (those present); else ``n`` clips of
    different classes chosen with ``seed``."""
    if indices is not None:
        return [int(i) for i in indices]
    rng = np.random.default_rng(seed)
    present = df["label"].drop_duplicates().tolist()
    if labels is not None:
        chosen = [lab for lab in labels if lab in set(present)]
    else:
        chosen = [present[k] for k in sorted(rng.choice(len(present), size=min(n, len(present)), replace=False))]
    return [int(rng.choice(np.flatnonzero(df["label"].to_numpy() == lab))) for lab in chosen]


def plot_examples(cache, indices=None, *, labels=None, n: int = 4, seed: int = 0, theme: str = "light"):
    """Example clips: waveform above its log-mel spectrogram (colour = power in dB, with its colour bar), the
    true event window shaded where known.

    Args:
        cache: an ``AudioCache``.
        indices: rows to show (default: one clip of each of ``labels``, or ``n`` clips of different classes
            chosen with ``seed``).
    """
    df = cache.manifest
    rows = _example_rows(df, indices, n, seed, labels)
    if not rows:
        raise ValueError("no clips to show")
    sr = cache.sample_rate
    with _theme(theme):
        fig, axes = plt.subplots(2, len(rows), figsize=(3.6 * len(rows) + 1.0, 4.8), squeeze=False,
                                 gridspec_kw={"height_ratios": [1, 1.6]}, constrained_layout=True)
        for col, i in enumerate(rows):
            x = cache.audio(i)[: int(cache.lengths[i])]
            t = np.arange(x.size) / sr
            ax_w, ax_s = axes[0, col], axes[1, col]
            ax_w.plot(t, x, lw=0.5, color="#1f77b4" if theme == "light" else "#7fc8ff")
            ax_w.set(xlim=(0, max(t[-1], 1e-3)), title=f"{df['label'].iloc[i]} ({df['split'].iloc[i]})")
            ax_w.set_xticklabels([])
            spec, centres = _log_mel(x, sr)
            # dB below the clip's loudest point: one colour scale (and one colour bar) fits every clip
            im = ax_s.imshow(spec - spec.max(), origin="lower", aspect="auto", cmap="magma",
                             extent=(0, x.size / sr, 0, spec.shape[0]), vmin=-80, vmax=0)
            ticks = np.linspace(0, spec.shape[0] - 1, 5).astype(int)
            ax_s.set_yticks(ticks + 0.5, [f"{centres[k] / 1000:.1f}" for k in ticks])
            ax_s.set(xlabel="time (s)", ylabel="kHz (mel scale)" if col == 0 else "")
            onset, offset = df["event_onset_s"].iloc[i], df["event_offset_s"].iloc[i]
            if np.isfinite(onset) and np.isfinite(offset):
                _shade_events(ax_w, [(onset, offset)], theme)
                for edge in (onset, offset):
                    ax_s.axvline(edge, color="#5fe35f", lw=1.2, ls="--")
        fig.colorbar(im, ax=axes[1, :].tolist(), label="dB below the clip's loudest point", shrink=0.9, pad=0.01)
    return fig


def plot_padding(samples: np.ndarray, length: int, sr: int = 16000, *, theme: str = "light"):
    """A short clip zero-padded to ``length`` samples, above the mask that says which samples are real (True) and
    which are padding (False): the model turns it into a frame mask, and attention pooling gives masked frames
    exactly zero weight.

    Args:
        samples: `(samples,)` a clip shorter than ``length``.
    """
    from .audio import fix_length

    padded, mask = fix_length(np.asarray(samples, dtype=np.float32), length, mode="start")
    t = np.arange(length) / sr
    real_s = mask.sum() / sr
    with _theme(theme):
        fig, (ax_w, ax_m) = plt.subplots(2, 1, figsize=(10, 3.4), sharex=True, constrained_layout=True,
                                         gridspec_kw={"height_ratios": [2.4, 1]})
        ax_w.plot(t, padded, lw=0.5, color="#1f77b4" if theme == "light" else "#7fc8ff")
        ax_w.axvspan(real_s, length / sr, color="#8c8c8c", alpha=0.25, lw=0, label="zero padding")
        ax_w.set(ylabel="amplitude", xlim=(0, length / sr), title=f"a {real_s:.1f} s clip padded to {length / sr:g} s")
        ax_w.legend(loc="upper right", fontsize=8)
        ax_m.fill_between(t, mask.astype(float), step="post", color="#2ca02c", alpha=0.6, lw=0)
        ax_m.set(yticks=[0, 1], yticklabels=["padding", "real"], ylim=(0, 1.15), xlabel="time (s)", ylabel="mask")
    return fig


def audio_player(samples: np.ndarray, sr: int = 16000):
    """An ``IPython.display.Audio`` player for a signal (no file written)."""
    from IPython.display import Audio

    return Audio(np.asarray(samples, dtype=np.float32), rate=sr, normalize=True)


def audio_players(data, indices=None, *, n: int = 4, seed: int = 0, labels=None, extra=None):
    """A small HTML table of labelled audio players (row, class, category, split, event window, any ``extra``
    columns) for clips of an ``AudioCache`` or of a manifest DataFrame (read with ``load_audio``).

    Args:
        indices: cache rows / manifest index labels to play (default: as :func:`plot_examples` chooses).
        extra: a DataFrame indexed like ``indices`` whose columns are added (e.g. ``predicted``, ``score``).

    Returns an ``IPython.display.HTML``; display it in a notebook.
    """
    import html

    from IPython.display import HTML

    from .audio import load_audio

    is_cache = hasattr(data, "audio")
    df = data.manifest if is_cache else _manifest_of(data)
    if indices is None:
        positions = _example_rows(df.reset_index(drop=True), None, n, seed, labels)
        indices = [df.index[p] for p in positions]
    extra_cols = list(extra.columns) if extra is not None else []
    cells = []
    for i in indices:
        row = df.loc[i]
        if is_cache:
            samples, sr = data.audio(i)[: int(data.lengths[i])], data.sample_rate
        else:
            samples, sr = load_audio(row["path"]), 16000
        onset, offset = row.get("event_onset_s", np.nan), row.get("event_offset_s", np.nan)
        event = f"{onset:.2f}–{offset:.2f} s" if np.isfinite(onset) and np.isfinite(offset) else "—"
        values = [i, row["label"], row.get("category", ""), row.get("split", ""), event]
        values += [_fmt_cell(extra.loc[i, c]) for c in extra_cols]
        player = audio_player(samples, sr)._repr_html_()
        cells.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + f"<td>{player}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ["row", "class", "category", "split", "event", *extra_cols, "listen"])
    return HTML(f"<table><tr>{head}</tr>{''.join(cells)}</table>")


def _fmt_cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, (float, np.floating)) else str(value)


# ---- training and evaluation plots (learning curves, confusion heatmap) ------------------------------------


def plot_learning_curves(history, *, chance: float | None = None, best_epoch: int | None = None,
                         theme: str = "light"):
    """Loss (train / val) and validation accuracy / macro-F1 per epoch, with chance accuracy and the kept (best)
    epoch marked.

    Args:
        history: ``TrainResult.history`` (a list of per-epoch dicts) or a DataFrame of it.
        chance: the accuracy of guessing (1 / classes on balanced data), drawn as a dotted line.
        best_epoch: the epoch training kept (``TrainResult.best_epoch``), drawn as a vertical line.
    """
    import pandas as pd

    h = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    if h.empty:
        raise ValueError("the history is empty: nothing to plot")
    with _theme(theme):
        fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
        ax_loss.plot(h["epoch"], h["train_loss"], "o-", ms=3, label="train")
        if "val_loss" in h:
            ax_loss.plot(h["epoch"], h["val_loss"], "s--", ms=3, label="validation")
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
        for key, style, name in (("train_accuracy", "o:", "train accuracy"), ("val_accuracy", "s-", "val accuracy"),
                                 ("val_macro_f1", "^--", "val macro-F1")):
            if key in h:
                ax_metric.plot(h["epoch"], h[key], style, ms=3, label=name)
        if chance is not None:
            ax_metric.axhline(chance, color="#8c8c8c", ls=":", lw=1.5, label=f"chance ({chance:.2f})")
        ax_metric.set(xlabel="epoch", ylabel="score", ylim=(0, 1.02), title="accuracy and macro-F1")
        for ax in (ax_loss, ax_metric):
            if best_epoch is not None:
                ax.axvline(best_epoch, color="#d62728", lw=1.2, alpha=0.7, label=f"kept: epoch {best_epoch}")
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            # outside the axes: a legend over the curves would hide the epochs that matter
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig


def plot_confusion(report, *, categories: dict | None = None, theme: str = "light"):
    """Confusion heatmap from an evaluation report: rows = true class, columns = predicted. Colour is each row's
    share of its true class (recall on the diagonal); numbers are clip counts, written only where there are
    clips, and lines divide the categories, so a confusion inside a category reads apart from one across them.

    Args:
        report: an ``EvalReport`` (or a dict with ``confusion`` and ``labels``, e.g. ``report.to_dict()``).
        categories: ``{class: category}`` (e.g. from the cache manifest); classes are grouped by it.
    """
    import pandas as pd
    import seaborn as sns

    counts = np.asarray(report["confusion"] if isinstance(report, dict) else report.confusion, dtype=int)
    labels = list(report["labels"] if isinstance(report, dict) else report.labels)
    order = list(range(len(labels)))
    cats = None
    if categories:
        table = pd.DataFrame({"label": labels, "label_id": order,
                              "category": [categories.get(lab, "") for lab in labels]})
        order = [labels.index(lab) for lab in _class_order(table)]
        cats = [categories.get(labels[i], "") for i in order]
    counts = counts[np.ix_(order, order)]
    names = [labels[i] for i in order]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    annot = np.where(counts > 0, counts.astype(str), "")
    size = max(4.5, 0.36 * len(names) + 2)
    with _theme(theme):
        fig, ax = plt.subplots(figsize=(size + 1.2, size), constrained_layout=True)
        sns.heatmap(shares, ax=ax, cmap="Blues", square=True, xticklabels=names, yticklabels=names, vmin=0, vmax=1,
                    annot=annot, fmt="", annot_kws={"fontsize": 8}, linewidths=0.3, linecolor="#dddddd",
                    cbar_kws={"label": "share of the true class's clips (numbers: clips)", "shrink": 0.7})
        if cats:
            for cat, start, end in _category_blocks(cats):
                if start:
                    ax.axhline(start, color="#444444", lw=1.4)
                    ax.axvline(start, color="#444444", lw=1.4)
                # above the columns (rows are in the same order): the category of each block
                ax.text((start + end) / 2 / len(names), 1.005, cat, transform=ax.transAxes, ha="center",
                        va="bottom", fontsize=9, fontweight="bold")
        per_class = counts.sum(axis=1)
        support = f"{per_class.min()}" if per_class.min() == per_class.max() else f"{per_class.min()}-{per_class.max()}"
        ax.set(xlabel="predicted", ylabel="true")
        ax.set_title(f"confusion matrix ({counts.sum()} clips, {support} per true class)", pad=20 if cats else 6)
        ax.tick_params(axis="x", labelrotation=90, labelsize=8)
        ax.tick_params(axis="y", labelrotation=0, labelsize=8)
    return fig


def plot_attention_localisation(report, *, theme: str = "light"):
    """Per class: the share of pooling weight inside the true event window beside the chance share and, where the
    report has them (``report.localisation``), the two loudness detectors scored on the same clips: weights
    proportional to frame energy, and all weight on the loudest frame.

    Args:
        report: an ``EvalReport`` evaluated on data with event times (synthetic soundscapes).
    """
    per_class = report.per_class
    if "attention_in_event" not in per_class or per_class["attention_in_event"].isna().all():
        raise ValueError("this report has no event times: attention localisation needs synthetic soundscapes")
    pc = per_class.dropna(subset=["attention_in_event"]).sort_values("attention_in_event")
    loc = getattr(report, "localisation", None)
    y = np.arange(len(pc))
    title = f"share of weight in the event: attention {report.attention_in_event:.2f}"
    with _theme(theme):
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(pc) + 1.8), constrained_layout=True)
        ax.barh(y, pc["attention_in_event"], color="#ff8c00", label="attention")
        if loc is not None:  # the same score for weightings that know nothing of the classes
            for name, marker, color, label in (("energy", "D", "#6b6b6b", "energy"),
                                               ("loudest_frame", "x", "#000000" if theme == "light" else "#ffffff",
                                                "loudest frame")):
                values = [loc["per_class"].get(c, {}).get(name, np.nan) for c in pc.index]
                ax.scatter(values, y, marker=marker, s=28, color=color, zorder=3, label=label)
                title += f", {label} {loc[name]:.2f}"
        ax.scatter(pc["attention_chance"], y, marker="|", s=160, color="#00a0d0", zorder=3,
                   label="chance (event duration / clip)")
        ax.set_yticks(y, pc.index, fontsize=8)
        ax.set(xlim=(0, 1.02), xlabel="share of weight inside the true event window",
               title=f"{title}, chance {report.attention_chance:.2f}")
        ax.title.set_fontsize(9)
        # below the axes: inside, it would sit on the bars
        handles, labels = ax.get_legend_handles_labels()
        first = labels.index("attention")  # the bars first, then the baselines
        order = [first] + [i for i in range(len(labels)) if i != first]
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper center",
                  bbox_to_anchor=(0.5, -0.09), ncol=4, fontsize=8, frameon=False)
        ax.grid(axis="x", alpha=0.3)
    return fig


# ---- prediction and attention plots (waveform + log-mel + attention over time, top-k bars, profiles) -------

#: Attention curves, one colour per head: bright, saturated hues that stay visible on white, on black and on the
#: spectrogram's dark colormap (each curve also gets a thin contrasting outline).
HEAD_COLORS = ("#ff8c00", "#00c8ff", "#ff3fa4", "#b6e300", "#a070ff", "#00d68f", "#ffd400", "#ff5a36")


@contextmanager
def _theme(theme: str):
    """Matplotlib style for ``theme`` ("light" or "dark"). Figures keep an opaque background either way, so a
    light figure in a dark notebook (or the reverse) still has readable text.

    ``plt.style.context`` restores *every* rcParam on exit, ``interactive`` included. A kernel loads its inline
    backend lazily, when the first figure is made, and IPython switches interactive mode on at that moment: if
    that happens inside the style context, the restore switches it off again and no later figure is shown in its
    cell. So interactive mode is kept as the block left it.
    """
    if theme not in ("light", "dark"):
        raise ValueError(f"theme must be 'light' or 'dark', got {theme!r}")
    with plt.style.context("dark_background" if theme == "dark" else "default"):
        try:
            yield
        finally:
            interactive = matplotlib.is_interactive()
    matplotlib.interactive(interactive)


def _outline(theme: str):
    import matplotlib.patheffects as pe

    return [pe.Stroke(linewidth=3.2, foreground="black" if theme == "dark" else "white"), pe.Normal()]


def _frame_geometry(pred) -> tuple[float, float]:
    """(hop, receptive field) of a Prediction's frames in seconds, read off its frame centres
    (centre_t = t·hop + field/2), so plots need no model."""
    times = np.asarray(pred.frame_times_s, dtype=np.float64)
    hop = float(times[1] - times[0]) if times.size > 1 else 0.02
    return hop, float(2 * times[0]) if times.size else 0.025


def attention_relative(pred) -> np.ndarray:
    """Pooling weights `(heads, frames)` rescaled so 1.0 means "uniform over the clip".

    Raw weights sum to 1, so their height shrinks as clips get longer; ×frames makes curves of different clips
    comparable: 3 means "this frame got three times its fair share".
    """
    w = np.asarray(pred.weights, dtype=np.float64)
    return w * w.shape[-1]


def frame_energy_db(pred, samples: np.ndarray, sr: int = 16000) -> np.ndarray:
    """RMS energy in dBFS of the samples each frame sees: `(frames,)`, aligned with ``pred.weights[h]``."""
    hop, field = _frame_geometry(pred)
    x = np.asarray(samples, dtype=np.float64)
    starts = np.round(np.arange(len(pred.frame_times_s)) * hop * sr).astype(int)
    width = max(1, int(round(field * sr)))
    power = np.cumsum(np.concatenate([[0.0], x * x]))
    ends = np.minimum(starts + width, x.size)
    starts = np.minimum(starts, x.size)
    mean_power = (power[ends] - power[starts]) / np.maximum(ends - starts, 1)
    return 10 * np.log10(np.maximum(mean_power, 1e-10))


def _shade_events(ax, events, theme: str, distractors=None) -> None:
    for i, (onset, offset) in enumerate(events or ()):
        ax.axvspan(onset, offset, color="#2ca02c" if theme == "light" else "#5fe35f", alpha=0.18, lw=0,
                   label="true event" if i == 0 else None)
    for i, (onset, offset) in enumerate(distractors or ()):  # hatched too: readable without colour
        ax.axvspan(onset, offset, facecolor="#d62728", edgecolor="#d62728", alpha=0.15, lw=0, hatch="//",
                   label="distractor (not the event)" if i == 0 else None)


def _draw_attention(ax, pred, theme: str, head_names=None):
    """Attention curves (× uniform) on a twin y-axis of ``ax``; returns the twin axis."""
    rel = attention_relative(pred)
    twin = ax.twinx()
    for h, curve in enumerate(rel):
        name = head_names[h] if head_names else (f"head {h + 1}" if len(rel) > 1 else "attention")
        line, = twin.plot(pred.frame_times_s, curve, color=HEAD_COLORS[h % len(HEAD_COLORS)], lw=1.8, label=name)
        line.set_path_effects(_outline(theme))
    twin.set_ylim(0, max(1.5, float(rel.max()) * 1.08))
    twin.set_ylabel("attention (× uniform)")
    return twin


def _log_mel(samples: np.ndarray, sr: int = 16000, n_mels: int = 64, hop_s: float = 0.010, win_s: float = 0.025):
    """Log-mel power spectrogram in dB: `(n_mels, frames)` and the bands' centre frequencies in Hz `(n_mels,)`.
    Uses transformers' audio_utils (the same STFT/mel code as Whisper's feature extractor)."""
    from transformers.audio_utils import hertz_to_mel, mel_filter_bank, mel_to_hertz, spectrogram, window_function

    win = int(round(win_s * sr))
    n_fft = 1 << (win - 1).bit_length()
    filters = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=20.0,
                              max_frequency=sr / 2, sampling_rate=sr, norm="slaney", mel_scale="slaney")
    x = np.asarray(samples, dtype=np.float32)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    spec = spectrogram(x, window_function(win, "hann"), frame_length=win, hop_length=int(round(hop_s * sr)),
                       fft_length=n_fft, power=2.0, mel_filters=filters, log_mel="dB", reference=1.0,
                       min_value=1e-10, db_range=None)
    edges = hertz_to_mel(np.array([20.0, sr / 2]), mel_scale="slaney")
    centres = mel_to_hertz(np.linspace(edges[0], edges[1], n_mels + 2)[1:-1], mel_scale="slaney")
    return spec, centres


def plot_attention(
    pred,
    samples: np.ndarray,
    sr: int = 16000,
    *,
    events=None,
    title: str | None = None,
    theme: str = "light",
    n_mels: int = 64,
):
    """Waveform and log-mel spectrogram of a clip with the model's attention over time drawn on both.

    Args:
        pred: a :class:`~asit_helpers.inference.Prediction` of ``samples``.
        samples: `(samples,)` the audio that was classified, at ``sr`` Hz.
        events: optional ``[(onset_s, offset_s), ...]`` true event windows, shaded in green.
        theme: "light" or "dark".

    Returns:
        a Figure with two rows (waveform, spectrogram), sharing the time axis; one curve per pooling head.
    """
    x = np.asarray(samples, dtype=np.float32)
    duration = x.size / sr
    with _theme(theme):
        fig, (ax_w, ax_s) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True, constrained_layout=True)
        wave_color = "#4c72b0" if theme == "light" else "#9db8e8"
        if x.size > 4000:  # min/max envelope: a 10-minute clip stays a fast, faithful plot
            bins = np.array_split(x, 2000)
            t = (np.cumsum([len(b) for b in bins]) - np.array([len(b) for b in bins]) / 2) / sr
            ax_w.fill_between(t, [b.min() for b in bins], [b.max() for b in bins], color=wave_color, lw=0)
        else:
            ax_w.plot(np.arange(x.size) / sr, x, color=wave_color, lw=0.6)
        _shade_events(ax_w, events, theme)
        ax_w.set_ylabel("amplitude")
        ax_w.set_xlim(0, duration)
        twin = _draw_attention(ax_w, pred, theme)
        handles = ax_w.get_legend_handles_labels()
        handles2 = twin.get_legend_handles_labels()

        spec, freqs_hz = _log_mel(x, sr, n_mels=n_mels)
        ax_s.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, duration, 0, n_mels),
                    vmin=spec.max() - 80, vmax=spec.max())
        ticks = np.linspace(0, n_mels - 1, 5).astype(int)
        ax_s.set_yticks(ticks + 0.5, [f"{freqs_hz[i] / 1000:.1f}" for i in ticks])
        ax_s.set_ylabel("mel band (kHz)")
        ax_s.set_xlabel("time (s)")
        _draw_attention(ax_s, pred, theme)
        for ev in events or ():
            for edge in ev:
                ax_s.axvline(edge, color="#5fe35f", lw=1.2, ls="--")
        # under the time axis, so it covers neither the waveform, the spectrogram nor the curves
        ax_s.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="upper center",
                    bbox_to_anchor=(0.5, -0.22), ncol=min(5, len(handles[0]) + len(handles2[0])), fontsize=8,
                    frameon=False)
        source = str(pred.source).replace("\\", "/").rsplit("/", 1)[-1]
        heading = title or f"{source}: {pred.label} ({pred.score:.0%})"
        ax_w.set_title(heading)
    return fig


def plot_top_k(pred, *, ax=None, theme: str = "light"):
    """Horizontal bars of the top-k class probabilities, best on top. Returns the Figure."""
    names = [n for n, _ in pred.top_k][::-1]
    probs = np.array([p for _, p in pred.top_k][::-1])
    with _theme(theme):
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.0), constrained_layout=True)
        else:
            fig = ax.figure
        colors = ["#8c8c8c"] * (len(names) - 1) + [HEAD_COLORS[0]]
        ax.barh(names, probs, color=colors)
        for i, p in enumerate(probs):
            ax.text(min(p + 0.01, 0.9), i, f"{p:.1%}", va="center", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability")
        ax.set_title(f"top-{len(names)}: {pred.label}")
    return fig


def attention_profiles(predictions, labels, n_bins: int = 50) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Average attention curve per class on a common relative-time grid.

    Args:
        predictions: Predictions (clips of any length); heads are averaged.
        labels: the true class of each clip (same order).
        n_bins: points on the 0 → 1 (start → end of clip) grid.

    Returns:
        ``(class_names, profiles, grid)``: profiles `(classes, n_bins)` in "× uniform" units, grid `(n_bins,)`.
    """
    grid = (np.arange(n_bins) + 0.5) / n_bins
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for pred, label in zip(predictions, labels):
        curve = attention_relative(pred).mean(axis=0)
        rel_t = np.asarray(pred.frame_times_s) / max(float(pred.duration_s), 1e-9)
        resampled = np.interp(grid, rel_t, curve)
        sums[label] = sums.get(label, 0) + resampled
        counts[label] = counts.get(label, 0) + 1
    names = sorted(sums)
    if not names:
        raise ValueError("attention_profiles needs at least one prediction")
    return names, np.stack([sums[n] / counts[n] for n in names]), grid


def attention_profiles_aligned(predictions, labels, onsets, *, before_s: float = 1.0, after_s: float = 3.0,
                               step_s: float = 0.04) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Average attention curve per class on a grid of seconds *from the true event's onset* (NaN where no clip of
    the class reaches that far): where does the model look relative to the event, whenever the event starts?

    Returns:
        ``(class_names, profiles, grid)``: profiles `(classes, len(grid))` in "× uniform" units.
    """
    grid = np.arange(-before_s, after_s + 1e-9, step_s)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for pred, label, onset in zip(predictions, labels, onsets):
        if not np.isfinite(onset):
            continue
        t = np.asarray(pred.frame_times_s) - onset
        inside = (grid >= t[0]) & (grid <= t[-1])
        curve = np.where(inside, np.interp(grid, t, attention_relative(pred).mean(axis=0)), 0.0)
        sums[label] = sums.get(label, 0) + curve
        counts[label] = counts.get(label, 0) + inside
    names = sorted(sums)
    if not names:
        raise ValueError("attention_profiles_aligned needs predictions with a finite event onset")
    with np.errstate(invalid="ignore", divide="ignore"):
        profiles = np.stack([np.where(counts[n] > 0, sums[n] / np.maximum(counts[n], 1), np.nan) for n in names])
    return names, profiles, grid


def plot_attention_profiles(predictions, labels, *, onsets=None, offsets=None, n_bins: int = 50,
                            theme: str = "light"):
    """Heatmap of each class's average attention: rows are classes, colour is attention × uniform (1 = no
    preference; the scale stops at the 98th percentile so one hot cell cannot wash out the rest).

    With ``onsets`` (true event onsets, seconds) the x axis is time from the event's onset and each row marks its
    class's mean event end (``offsets``): the profiles are aligned on the events. Without, it is the position in
    the clip (0 = start, 1 = end), for recordings without event times.
    """
    aligned = onsets is not None and np.isfinite(np.asarray(onsets, dtype=float)).any()
    if aligned:
        after_s = 3.0
        if offsets is not None:  # the grid ends half a second after the longest event
            lengths = np.asarray(offsets, dtype=float) - np.asarray(onsets, dtype=float)
            if np.isfinite(lengths).any():
                after_s = float(np.nanmax(lengths)) + 0.5
        names, profiles, grid = attention_profiles_aligned(predictions, labels, onsets, after_s=after_s)
        extent = (grid[0], grid[-1], len(names), 0)
    else:
        names, profiles, grid = attention_profiles(predictions, labels, n_bins)
        extent = (0, 1, len(names), 0)
    vmax = float(np.nanpercentile(profiles, 98)) if np.isfinite(profiles).any() else 1.0
    with _theme(theme):
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(names) + 1.8), constrained_layout=True)
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("#bbbbbb")
        im = ax.imshow(profiles, aspect="auto", cmap=cmap, extent=extent, vmin=0, vmax=max(vmax, 1.0),
                       interpolation="nearest")
        ax.set_yticks(np.arange(len(names)) + 0.5, names)
        if aligned:
            ax.axvline(0, color="white", lw=1.2, ls="--")
            if offsets is not None:
                dur = {}
                for label, on, off in zip(labels, onsets, offsets):
                    if np.isfinite(on) and np.isfinite(off):
                        dur.setdefault(label, []).append(off - on)
                for row, name in enumerate(names):
                    if name in dur:
                        ax.plot([np.mean(dur[name])] * 2, [row + 0.1, row + 0.9], color="#ff3fa4", lw=2.2)
            ax.set_xlabel("seconds from the true event's onset (dashed line); pink: the class's mean event end; "
                          "grey: no clip reaches that far", fontsize=9)
            ax.set_title("average attention per class, aligned on the true event")
        else:
            ax.set_xlabel("position in clip (0 = start, 1 = end)")
            ax.set_title("average attention per class")
        fig.colorbar(im, ax=ax, label="attention (× uniform)", extend="max")
    return fig


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties broken by order; fine for continuous values). NaN for constant input."""
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    if ra.std() == 0 or rb.std() == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def plot_attention_vs_energy(pred, samples: np.ndarray, sr: int = 16000, *, events=None, distractors=None,
                             title: str | None = None, theme: str = "light"):
    """Does the model just follow loudness? Left: frame energy and attention over time; right: one dot per frame,
    energy (dBFS) against attention, with the Spearman correlation in the title. A high ρ means attention tracks
    energy; a model that found the *sound* (not the loudest part) can score well with a modest ρ.

    ``events`` (shaded green) and ``distractors`` (hatched red: loud sounds that are not the event, ``asit synth
    --distractors``) are ``[(onset_s, offset_s), ...]``."""
    energy = frame_energy_db(pred, samples, sr)
    attn = attention_relative(pred).mean(axis=0)
    rho = spearman(energy, attn)
    with _theme(theme):
        fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True,
                                         gridspec_kw={"width_ratios": [2, 1]})
        ax_t.plot(pred.frame_times_s, energy, color="#8c8c8c", lw=1, label="energy (dBFS)")
        ax_t.set_xlabel("time (s)")
        ax_t.set_ylabel("energy (dBFS)")
        twin = _draw_attention(ax_t, pred, theme)
        _shade_events(ax_t, events, theme, distractors)
        h1, l1 = ax_t.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax_t.legend(h1 + h2, l1 + l2, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, fontsize=8, frameon=False)
        if title:
            fig.suptitle(title, fontsize=10)
        sc = ax_s.scatter(energy, attn, c=pred.frame_times_s, cmap="viridis", s=10)
        ax_s.set_xlabel("frame energy (dBFS)")
        ax_s.set_ylabel("attention (× uniform, mean of heads)")
        ax_s.set_title(f"Spearman ρ = {rho:.2f}")
        fig.colorbar(sc, ax=ax_s, label="time (s)")
    return fig


def save_figure(fig, path, dpi: int = 110):
    """Write a figure as PNG atomically (temp file + rename: an interrupted run leaves no half-written image)."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, facecolor=fig.get_facecolor())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# ---- faithfulness (explain.py): deletion/insertion curves, clips with two events ------------------------------

#: One fixed colour per saliency, so the curves read the same in every figure.
SALIENCY_COLORS = {"attention": "#ff8c00", "random": "#8c8c8c", "energy": "#00a0d0",
                   "gradient_x_input": "#b040c0", "occlusion": "#2ca02c"}


def plot_deletion_curves(report, saliencies=None, *, theme: str = "light"):
    """Mean deletion and insertion curves of a ``FaithfulnessReport``, one line per saliency, AUC in the legend.

    Deletion (left): the true class's probability as the top-ranked frames are removed; lower and earlier is more
    faithful. Insertion (right): as they are put back into an emptied clip; higher and earlier is more faithful.
    """
    names = list(saliencies or report.saliencies)
    summary = report.summary()
    with _theme(theme):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True, constrained_layout=True)
        for ax, kind in zip(axes, ("deletion", "insertion")):
            curves = report.mean_curves(kind)
            for k, name in enumerate(names):
                area = summary[name][f"{kind}_auc"]
                color = SALIENCY_COLORS.get(name, HEAD_COLORS[(k + 1) % len(HEAD_COLORS)])
                style = "--" if name.startswith("attention_head") else "-"
                ax.plot(report.fractions, curves[name], style, color=color, lw=1.8,
                        label=f"{name} (AUC {area:.3f})" if area is not None else name)
            ax.set(xlabel="fraction of frames " + ("removed" if kind == "deletion" else "put back"),
                   title=f"{kind} ({'lower' if kind == 'deletion' else 'higher'} is more faithful)", xlim=(0, 1))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set(ylabel="probability of the true class", ylim=(0, 1.02))
        fig.suptitle(f"{len(report.labels) - len(report.skipped)} clips; removed audio → {report.replacement}",
                     fontsize=10)
    return fig


def plot_two_events(reports, samples, index: int = 0, sr: int = 16000, *, theme: str = "light"):
    """Clips with two events: one example clip per model (both windows shaded, one attention curve per head) and
    the models' rates side by side (top-1 is one of the two, top-2 accuracy, follows the louder / longer event,
    heads that take both events).

    Args:
        reports: ``{name: TwoEventReport}`` of the same clips (e.g. single-head vs multi-head pooling).
        samples: `(samples,)` the audio of clip ``index``.
    """
    x = np.asarray(samples, dtype=np.float32)
    t = np.arange(x.size) / sr
    rates = ["top1_is_one_of_the_two", "top2_accuracy", "follows_louder", "follows_longer"]
    if any(rep.heads > 1 for rep in reports.values()):  # one head cannot split two events: no bar that reads 0.00
        rates.append("heads_take_both_events")
    with _theme(theme):
        fig, axes = plt.subplots(len(reports) + 1, 1, figsize=(10, 2.6 * len(reports) + 3.2), constrained_layout=True)
        for ax, (name, rep) in zip(axes, reports.items()):
            row = rep.clips.iloc[index]
            ax.plot(t, x, color="#4c72b0" if theme == "light" else "#9db8e8", lw=0.4)
            for tag, on, off, label, snr, color in (
                ("A", row.onset_s, row.offset_s, row.label, row.snr_db, "#2ca02c"),
                ("B", row.onset_2_s, row.offset_2_s, row.label_2, row.snr_2_db, "#d62728"),
            ):
                ax.axvspan(on, off, color=color, alpha=0.18, lw=0, label=f"{tag}: {label} ({snr:.0f} dB, {off - on:.1f} s)")
            twin = ax.twinx()
            w = rep.weights[index]
            for h, curve in enumerate(w * w.shape[-1]):
                line, = twin.plot(rep.frame_times[: w.shape[-1]], curve, color=HEAD_COLORS[h % len(HEAD_COLORS)], lw=1.6,
                                  label=f"head {h + 1}" if len(w) > 1 else "attention")
                line.set_path_effects(_outline(theme))
            twin.set_ylabel("attention (× uniform)")
            twin.set_ylim(0, max(1.5, float((w * w.shape[-1]).max()) * 1.08))
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = twin.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, loc="upper left", bbox_to_anchor=(1.07, 1.0), fontsize=7, framealpha=0.7)
            ax.set(xlim=(0, t[-1] if t.size else 1), xlabel="time (s)", ylabel="amplitude",
                   title=f"{name} ({rep.pooling}, {rep.heads} head{'s' * (rep.heads > 1)}): predicted {row.top1}, "
                         f"then {row.top2}")
        ax = axes[-1]
        width = 0.8 / max(1, len(reports))
        for k, (name, rep) in enumerate(reports.items()):
            s = rep.summary()
            values = [s[r] if s[r] is not None else np.nan for r in rates]
            bars = ax.bar(np.arange(len(rates)) + (k - (len(reports) - 1) / 2) * width, values, width,
                          color=HEAD_COLORS[k % len(HEAD_COLORS)], label=f"{name} ({s['clips']} clips)")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        # every rate beside its chance: a random ranking for top-1/top-2, a coin for louder/longer
        s = next(iter(reports.values())).summary()
        chance = {"top1_is_one_of_the_two": s["top1_chance"], "top2_accuracy": s["top2_chance"],
                  "follows_louder": 0.5, "follows_longer": 0.5}
        marked = [(i, chance[r]) for i, r in enumerate(rates) if chance.get(r) is not None]
        for k, (i, level) in enumerate(marked):
            ax.hlines(level, i - 0.45, i + 0.45, colors="#333333", linestyles="--", lw=1.2,
                      label="chance" if k == 0 else None)
        ax.set_xticks(np.arange(len(rates)), [r.replace("_", " ") for r in rates], fontsize=8)
        ax.set(ylim=(0, 1.1), ylabel="share of clips")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return fig


# ---- teaching (teach.py): how many examples are enough -------------------------------------------------------

SHOTS_COLORS = {"base": "#ff8c00", "random": "#8c8c8c", "mean": "#1f77b4"}


def plot_shots_curve(result: dict, *, theme: str = "light"):
    """Accuracy on unseen clips of newly taught classes against examples per class (``bench/teach_shots.py``'s
    result): one line per condition (mean ± sd over repeats, log-2 axis), chance dotted."""
    with _theme(theme):
        fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
        for condition, points in result["curve"].items():
            shots = [p["shots"] for p in points]
            mean = np.array([p["accuracy_mean"] for p in points])
            sd = np.array([p["accuracy_sd"] for p in points])
            color = SHOTS_COLORS.get(condition)
            ax.plot(shots, mean, "o-", color=color, label=result.get("conditions", {}).get(condition, condition))
            ax.fill_between(shots, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
        ax.axhline(result["chance"], color="#8c8c8c", ls=":", lw=1.5, label=f"chance ({result['chance']:.2f})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.set(xlabel="examples per class", ylabel="accuracy on unseen clips", ylim=(0, 1.02),
               title=f"teaching {len(result['held_out'])} new classes: {', '.join(result['held_out'])}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7.5, frameon=False)  # below: the
        # curves use the whole height
    return fig
