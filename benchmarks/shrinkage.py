"""Per-movie like-rates on MovieLens 100K: raw mean, beta-binomial EB and compound SURE.

    .venv/bin/python -m benchmarks.shrinkage [--min-later 5] [--folds 5] [--seed 0]

The 100,000 ratings are split by time at the median timestamp. Ratings before it form the
early period (the estimates come from it); the rest form the later period (the yardstick).
A movie's "click" is a ``like`` (rating >= 4, the dataset's label). Every movie with at
least one early rating is estimated, with the estimators in :mod:`adrank.shrinkage`:

* raw: early likes / early ratings;
* EB: beta-binomial posterior means, with the prior fitted by the method of moments, and
  again by marginal maximum likelihood;
* SURE (constant target): compound linear shrinkage towards a constant ``c``, with
  ``(lam, c)`` chosen by the approximate SURE;
* SURE (ML-assisted): the same, shrinking towards ``g f_i + (1 - g) mu`` with ``(lam, g)``
  chosen by the approximate SURE. ``f_i`` is a cross-fitted (``--folds`` over movies)
  L2 logistic regression (:func:`adrank.glm.fit_logistic`, l2 = 1) of early likes out of
  early ratings. Its inputs are the movie's first genre, release decade and
  log(1 + early ratings); a movie's own likes never enter its ``f_i``;
* ML prediction alone (``f_i``), for reference.

Scoring covers movies with at least ``--min-later`` later ratings. It reports the mean
squared error against the later like-rate, by bucket of early ratings. The later rate is
itself noisy, and rates can drift between periods. The noise adds the same amount to every
method's MSE in a bucket, so the table also gives it (the mean unbiased variance of the
later rate). A raw rate of 0 makes log-likelihood useless, which is why the scoring uses
squared error. Writes ``benchmarks/results/debias/shrinkage.{md,csv,png,json}``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "debias"
BUCKETS = ((1, 1), (2, 4), (5, 9), (10, 19), (20, 49), (50, 99), (100, 10**9))
METHODS = ("raw", "eb", "eb_ml", "sure_pooled", "sure_ml", "ml_only")
ESTIMATORS = METHODS[:-1]  # the ML prediction alone is a reference
LABELS = {
    "raw": "raw mean",
    "eb": "beta-binomial EB (moments)",
    "eb_ml": "beta-binomial EB (marginal ML)",
    "sure_pooled": "compound SURE, constant target",
    "sure_ml": "compound SURE, ML-assisted",
    "ml_only": "ML prediction alone",
}


def movie_counts(data_dir: Path):
    """Per movie: early likes/ratings, later likes/ratings, first genre, release year."""
    import polars as pl

    from adrank.data.datasets import get_dataset

    frame = get_dataset("movielens_100k").read(data_dir)
    cut = float(frame["timestamp"].median())
    early = pl.col("timestamp") < cut
    per = (
        frame.group_by("item_id")
        .agg(
            pl.col("like").filter(early).sum().alias("x"),
            early.sum().alias("n"),
            pl.col("like").filter(~early).sum().alias("x_later"),
            (~early).sum().alias("n_later"),
            pl.col("genre").first(),
            pl.col("release_year").first(),
        )
        .sort("item_id")
    )
    return per, cut


def ml_predictions(per, folds: int, seed: int) -> np.ndarray:
    """Cross-fitted logistic-regression like-rate of each movie (see the module doc)."""
    from adrank.glm import fit_logistic, sigmoid

    genres = sorted(per["genre"].unique().to_list())
    years = per["release_year"].cast(str).to_list()
    decades = [y[:3] + "0s" if y and y[:3].isdigit() else "unknown" for y in years]
    levels = sorted(set(decades))
    x = np.concatenate(
        [
            np.stack([per["genre"].to_numpy() == g for g in genres], axis=1),
            np.stack([np.array(decades) == d for d in levels], axis=1),
            np.log1p(per["n"].to_numpy())[:, None],
        ],
        axis=1,
    ).astype(np.float64)
    clicks, trials = per["x"].to_numpy().astype(float), per["n"].to_numpy().astype(float)
    fold = np.random.default_rng(seed).permutation(len(per)) % folds
    out = np.empty(len(per))
    for k in range(folds):
        train = (fold != k) & (trials > 0)
        coef = fit_logistic(x[train], clicks[train], trials[train], l2=1.0)
        out[fold == k] = sigmoid(coef[0] + x[fold == k] @ coef[1:])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--min-later", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    from adrank.data.datasets import resolve_data_dir
    from adrank.shrinkage import BetaBinomialEB, CompoundShrinkage, unbiased_variance
    from adrank.utils import atomic_write_text

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    per, cut = movie_counts(resolve_data_dir(args.data_dir))
    f_all = ml_predictions(per, args.folds, args.seed)
    have = per["n"].to_numpy() > 0
    x = per["x"].to_numpy()[have].astype(float)
    n = per["n"].to_numpy()[have].astype(float)
    f = f_all[have]
    eb = BetaBinomialEB().fit(x, n)
    eb_ml = BetaBinomialEB(method="ml").fit(x, n)
    pooled = CompoundShrinkage().fit(x, n)
    assisted = CompoundShrinkage().fit(x, n, f)
    est = {
        "raw": x / n,
        "eb": eb.predict(x, n),
        "eb_ml": eb_ml.predict(x, n),
        "sure_pooled": pooled.predict(x, n),
        "sure_ml": assisted.predict(x, n, f),
        "ml_only": f,
    }
    x_later = per["x_later"].to_numpy()[have].astype(float)
    n_later = per["n_later"].to_numpy()[have].astype(float)
    scored = n_later >= args.min_later
    later = np.where(scored, x_later / np.maximum(n_later, 1), np.nan)
    noise = np.where(scored, unbiased_variance(x_later, np.maximum(n_later, 1)), np.nan)

    rows = []
    for lo, hi in (*BUCKETS, (1, 10**9)):
        mask = scored & (n >= lo) & (n <= hi)
        k = int(mask.sum())
        name = "all" if (lo, hi) == (1, 10**9) else _bucket_name(lo, hi)
        row: dict = {"bucket": name, "movies": k, "later_noise": float(np.mean(noise[mask]))}
        for m in METHODS:
            err = (est[m][mask] - later[mask]) ** 2
            row[m] = float(err.mean()) if k else float("nan")
            row[f"{m}_se"] = float(err.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
        # paired: the same movies' squared errors, each compound SURE minus EB (marginal ML)
        base = (est["eb_ml"][mask] - later[mask]) ** 2
        for m in ("sure_pooled", "sure_ml"):
            diff = (est[m][mask] - later[mask]) ** 2 - base
            row[f"{m}_minus_eb_ml"] = float(diff.mean()) if k else float("nan")
            row[f"{m}_minus_eb_ml_se"] = float(diff.std(ddof=1) / np.sqrt(k)) if k > 1 else np.nan
        rows.append(row)
    seconds = time.perf_counter() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    fitted = {
        "eb": {"alpha": eb.alpha_, "beta": eb.beta_, "mean": eb.mean_, "rho": eb.rho_},
        "eb_ml": {"alpha": eb_ml.alpha_, "beta": eb_ml.beta_, "mean": eb_ml.mean_},
        "sure_pooled": {
            "lambda": pooled.lambda_,
            "location": pooled.location_,
            "sure": pooled.sure_,
        },
        "sure_ml": {
            "lambda": assisted.lambda_,
            "trust": assisted.trust_,
            "location": assisted.location_,
            "sure": assisted.sure_,
        },
    }
    payload = {
        "rows": rows,
        "fitted": fitted,
        "time_cut": cut,
        "movies_estimated": int(have.sum()),
        "movies_scored": int(scored.sum()),
        "args": {k: str(v) for k, v in vars(args).items()},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "seconds": seconds,
    }
    atomic_write_text(args.out / "shrinkage.json", json.dumps(payload, indent=2))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out / "shrinkage.csv", buf.getvalue())
    _plot(rows, args.out / "shrinkage.png")
    md = _markdown(rows, fitted, payload, args)
    atomic_write_text(args.out / "shrinkage.md", md)
    print(md)


def _bucket_name(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10**9 else (str(lo) if lo == hi else f"{lo}-{hi}")


def _plot(rows: list[dict], path: Path) -> None:
    from adrank.plots import pyplot, save_png

    plt = pyplot()
    buckets = [r for r in rows if r["bucket"] != "all"]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    xs = np.arange(len(buckets))
    for i, m in enumerate(METHODS):
        y = np.array([r[m] for r in buckets])
        se = np.array([r[f"{m}_se"] for r in buckets])
        ax.errorbar(xs + (i - 2.5) * 0.07, y, yerr=se, marker="o", capsize=3, label=LABELS[m])
    ax.plot(xs, [r["later_noise"] for r in buckets], "k:", label="later-rate noise (floor)")
    ax.set_xticks(xs, [r["bucket"] for r in buckets])
    ax.set_yscale("log")
    ax.set_xlabel("early ratings of the movie")
    ax.set_ylabel("MSE vs later like-rate (± 1 s.e.)")
    ax.set_title("MovieLens 100K per-movie like-rate: early-period estimates vs later rates")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def _markdown(rows, fitted, payload, args) -> str:
    import datetime

    cut = datetime.datetime.fromtimestamp(payload["time_cut"], datetime.timezone.utc)
    lines = [
        "# Sparse-segment CTR: per-movie like-rates on MovieLens 100K",
        "",
        f"Generated by `python -m benchmarks.shrinkage --min-later {args.min_later} --folds "
        f"{args.folds} --seed {args.seed}` (load average {payload['loadavg_before'][0]:.2f} on "
        f"{payload['cpus']} CPUs; nothing here is a timing). Ratings before the median "
        f"timestamp ({cut:%Y-%m-%d %H:%M} UTC) are the early period. A like is rating >= 4, "
        f"the dataset's `like` label. {payload['movies_estimated']:,} movies with at least one "
        "early rating are estimated. The "
        f"{payload['movies_scored']:,} of them with at least {args.min_later} later ratings "
        "are scored: mean squared error of the early-period estimate against the "
        "later-period like-rate (x 1e-3; ± one standard error over movies), by bucket of "
        "early ratings. 'later noise' is the mean unbiased sampling variance of the later "
        "rate, a floor that every method shares. Estimators: `adrank/shrinkage.py`; "
        "plot: `shrinkage.png`.",
        "",
        "| early ratings | movies | " + " | ".join(LABELS[m] for m in METHODS)
        + " | later noise | SURE-const minus EB-ML | SURE-ML minus EB-ML |",
        "|---|---|" + "---|" * (len(METHODS) + 3),
    ]  # fmt: skip
    for r in rows:
        best = min(ESTIMATORS, key=lambda m: r[m])
        cells = []
        for m in METHODS:
            text = f"{1e3 * r[m]:.2f} ± {1e3 * r[f'{m}_se']:.2f}"
            cells.append(f"**{text}**" if m == best else text)
        lines.append(
            f"| {r['bucket']} | {r['movies']} | " + " | ".join(cells)
            + f" | {1e3 * r['later_noise']:.2f} | "
            + " | ".join(
                f"{1e3 * r[f'{m}_minus_eb_ml']:+.2f} ± {1e3 * r[f'{m}_minus_eb_ml_se']:.2f}"
                for m in ("sure_pooled", "sure_ml")
            )
            + " |"
        )  # fmt: skip
    e, e2 = fitted["eb"], fitted["eb_ml"]
    p, a = fitted["sure_pooled"], fitted["sure_ml"]
    t = rows[-1]  # all buckets
    lines += [
        "",
        "Bold: the lowest MSE among the estimators (the ML prediction alone is a reference). "
        "The last two columns are paired: the same movies' squared errors, each compound "
        "SURE estimator minus EB (marginal ML), ± one standard error.",
        "",
        f"- EB prior by the method of moments: Beta({e['alpha']:.2f}, {e['beta']:.2f}), mean "
        f"{e['mean']:.3f} (the pooled rate); by marginal maximum likelihood: "
        f"Beta({e2['alpha']:.2f}, {e2['beta']:.2f}), mean {e2['mean']:.3f}. The posterior "
        "mean puts weight n / (n + alpha + beta) on a movie's raw rate.",
        f"- Compound SURE, constant target: lam = {p['lambda']:.2f}, c = {p['location']:.3f} "
        f"(approximate SURE {1e3 * p['sure']:.2f}e-3).",
        f"- Compound SURE, ML-assisted: lam = {a['lambda']:.2f}, trust in the ML prediction "
        f"g = {a['trust']:.2f}, c = {a['location']:.3f} (approximate SURE "
        f"{1e3 * a['sure']:.2f}e-3).",
        "- The compound estimator chooses its shrinkage by minimising an estimate of this "
        "very risk over a class of estimators, treating the movies' rates as fixed. It does "
        "not posit a prior, and that is what separates it from EB. With a constant target, "
        "EB and compound SURE are in the same class, a weight n / (n + lam) on the raw rate "
        "and the rest on a constant. They differ only in how lam and the constant are "
        "chosen. The ML-assisted class adds a per-movie target.",
        f"- Over all {t['movies']:,} scored movies (MSE x 1e-3): raw {1e3 * t['raw']:.2f}, EB "
        f"(moments) {1e3 * t['eb']:.2f}, EB (marginal ML) {1e3 * t['eb_ml']:.2f}, SURE "
        f"(constant) {1e3 * t['sure_pooled']:.2f}, SURE (ML-assisted) "
        f"{1e3 * t['sure_ml']:.2f}. Paired against EB (marginal ML): SURE (constant) "
        f"{1e3 * t['sure_pooled_minus_eb_ml']:+.2f} ± {1e3 * t['sure_pooled_minus_eb_ml_se']:.2f}"
        f", SURE (ML-assisted) {1e3 * t['sure_ml_minus_eb_ml']:+.2f} ± "
        f"{1e3 * t['sure_ml_minus_eb_ml_se']:.2f}. Rarely "
        "rated movies are liked less than the pooled rate suggests. A target that knows this "
        "(EB's marginal-ML prior mean, or the ML prediction, which sees log early ratings) "
        "helps most in the small buckets. EB given the same covariates (a regression prior) "
        "is not compared here.",
        f"- The ML-assisted class has the lower approximate SURE on the early period "
        f"({1e3 * a['sure']:.2f}e-3 against {1e3 * p['sure']:.2f}e-3 for the constant "
        f"target). Against the later rates, it is "
        f"{'better' if t['sure_ml'] < t['sure_pooled'] else 'no better'} overall "
        f"({1e3 * t['sure_ml']:.2f} against {1e3 * t['sure_pooled']:.2f}). It helps in the "
        "5-19 buckets and costs a little on well-rated movies. The features used here (first "
        "genre, decade, log early ratings) carry little beyond what the constant captures.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
