"""``python -m engine mlbench ...``: the CORDEX ML-Bench protocol from the command line.

Commands
--------
mlbench list                          domains, experiments (with their test sets) and models
mlbench download --domain ALPS        the real archive (Zenodo, ~5 GB, once, checksummed)
mlbench standin --domain ALPS         write the offline stand-in archive (see engine.mlbench.standin)
mlbench train --domain ALPS --experiment ESD_pseudo_reality --model deepesd [--standin | --root DIR]
                                      (--model diffusion: conditional diffusion, 10 members per file)
mlbench score RUN [RUN ...] [--out scorecard.csv]
"""

from __future__ import annotations

from pathlib import Path


def standin_root(domain: str) -> Path:
    """Where ``--standin`` keeps the generated archive (apart from the real one's cache folder; one
    folder per generator version, so that a stand-in from an older generator is not reused)."""
    from engine.data.paths import cache_dir
    from engine.mlbench.standin import STANDIN_VERSION

    return cache_dir(f"mlbench-standin-v{STANDIN_VERSION}") / domain


def ensure_standin(domain: str, **sizes) -> Path:
    """The stand-in ``<domain>_domain`` folder, generated once with ``sizes`` (generate_standin's)."""
    from engine.mlbench.protocol import get_domain
    from engine.mlbench.standin import generate_standin

    get_domain(domain)
    folder = standin_root(domain) / f"{domain}_domain"
    if not (folder / "test").is_dir():
        generate_standin(domain, standin_root(domain), **sizes)
    return folder


def cmd_list(args) -> int:
    from engine.mlbench.experiments import MODEL_PRESETS
    from engine.mlbench.protocol import DOMAINS, EXPERIMENTS

    for d in DOMAINS.values():
        print(f"domain {d.name:5s} {d.rcm} driven by {d.gcm} (transferability: {d.gcm_transfer}), grid {d.spatial_dims}")
    for e in EXPERIMENTS.values():
        print(f"experiment {e.name} (training {e.years}):")
        for t in e.tests:
            print(f"    {t.name:45s} {t.period:12s} {t.mode:9s} {'second GCM' if t.transfer else 'same GCM'}")
    print("models: " + ", ".join(MODEL_PRESETS) + ", or backbone:upsampling of the zoo")
    return 0


def cmd_download(args) -> int:
    from engine.mlbench.download import download_archive

    print(download_archive(args.domain, args.root))
    return 0


def cmd_standin(args) -> int:
    from engine.mlbench.standin import generate_standin

    out = generate_standin(args.domain, args.out or standin_root(args.domain), train_years=args.train_years,
                           test_years=args.test_years, days_per_year=args.days_per_year, seed=args.seed)
    print(out)
    return 0


def cmd_train(args) -> int:
    from engine.mlbench.experiments import MLBenchConfig, train

    root = args.root
    if args.standin:
        root = str(ensure_standin(args.domain))
    cfg = MLBenchConfig(domain=args.domain, experiment=args.experiment, model=args.model, epochs=args.epochs,
                        batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch, lr=args.lr,
                        seed=args.seed, orography=not args.no_orography, root=root, threads=args.threads,
                        members=args.members, predictor_adjustment=args.predictor_adjustment,
                        model_options={} if args.sampling_steps is None else {"sampling_steps": args.sampling_steps}
                        ).validate()
    run = train(cfg, args.runs)
    print(run)
    return 0


def cmd_score(args) -> int:
    import pandas as pd

    from engine.mlbench.scoring import write_scorecard

    out = args.out or str(Path(args.run[0]).parent / "scorecard.csv")
    table = write_scorecard(args.run, out, baselines=not args.no_baselines, workers=args.workers)
    with pd.option_context("display.width", 200, "display.max_columns", 12, "display.precision", 3):
        print(table[["model", "experiment", "test", "period"] + [c for c in ("tasmax_rmse", "tasmax_ralsd",
                                                                             "pr_rmse", "pr_ralsd") if c in table]])
    print(f"scorecard: {out}")
    return 0


def add_parser(sub) -> None:
    """Add the ``mlbench`` command and its subcommands to the engine's command line."""
    from engine.mlbench.adjust import ADJUSTMENTS
    p = sub.add_parser("mlbench", help="CORDEX ML-Bench: train, predict and score the benchmark's experiments")
    msub = p.add_subparsers(dest="mlbench_command", required=True)
    msub.add_parser("list", help="domains, experiments, test sets, models").set_defaults(func=cmd_list)

    q = msub.add_parser("download", help="download and unpack the real archive of a domain (once)")
    q.add_argument("--domain", required=True)
    q.add_argument("--root", default=None, help="folder to unpack into (default: the data cache)")
    q.set_defaults(func=cmd_download)

    q = msub.add_parser("standin", help="write the offline stand-in archive of a domain")
    q.add_argument("--domain", required=True)
    q.add_argument("--out", default=None)
    q.add_argument("--train-years", type=int, default=3)
    q.add_argument("--test-years", type=int, default=2)
    q.add_argument("--days-per-year", type=int, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_standin)

    q = msub.add_parser("train", help="train a model on an experiment and write its submission files")
    q.add_argument("--domain", required=True)
    q.add_argument("--experiment", required=True)
    q.add_argument("--model", default="deepesd")
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--samples-per-epoch", type=int, default=None, help="random training days per epoch (default: all)")
    q.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-3 for deepesd, else 2e-3)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--no-orography", action="store_true", help="train without the static orography")
    q.add_argument("--predictor-adjustment", default="none", choices=ADJUSTMENTS,
                   help="map the GCM's (imperfect) predictors onto the perfect ones' historical mean and variance "
                        "before prediction (engine.mlbench.adjust); default: none, as the benchmark's scripts")
    q.add_argument("--members", type=int, default=10,
                   help="ensemble members of a generative model (diffusion; the submission needs 10)")
    q.add_argument("--sampling-steps", type=int, default=None,
                   help="diffusion sampling steps (default: the model's, 20)")
    where = q.add_mutually_exclusive_group()
    where.add_argument("--root", default=None, help="the unpacked <domain>_domain folder of an archive")
    where.add_argument("--standin", action="store_true", help="use (and generate once) the offline stand-in")
    q.set_defaults(func=cmd_train)

    q = msub.add_parser("score", help="scorecard of runs and baselines on every test set")
    q.add_argument("run", nargs="+")
    q.add_argument("--out", default=None, help="CSV to write (default: scorecard.csv beside the first run)")
    q.add_argument("--no-baselines", action="store_true")
    q.add_argument("--workers", type=int, default=1, help="processes scoring the test files (dask; default 1)")
    q.set_defaults(func=cmd_score)
