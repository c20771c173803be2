"""CORDEX ML-Bench end to end: the protocol, the real archives (or a stand-in), training the
benchmark's experiments, the submission files and the scorecard.

Modules: :mod:`~engine.mlbench.protocol` (domains, experiments, test sets, file layout),
:mod:`~engine.mlbench.download` (Zenodo archives and templates, pooch with checksums),
:mod:`~engine.mlbench.standin` (the offline stand-in archive), :mod:`~engine.mlbench.submission`
(prediction files in the benchmark's format, checked against the templates),
:mod:`~engine.mlbench.experiments` (training), :mod:`~engine.mlbench.prediction` (predicting), :mod:`~engine.mlbench.scoring`
(baselines and the scorecard).
"""

from engine.mlbench.protocol import DOMAINS, EXPERIMENTS, MLBenchError, get_domain, get_experiment

__all__ = ["DOMAINS", "EXPERIMENTS", "MLBenchError", "get_domain", "get_experiment"]
