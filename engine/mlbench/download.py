"""Getting the real benchmark files: the Zenodo archives and the submission templates.

- Archives: one zip per domain (~5 GB) in Zenodo record 17957264 (DOI 10.5281/zenodo.17957264),
  fetched with pooch. The checksums are Zenodo's own: pooch reads the record's md5 of every file
  through the DOI (``load_registry_from_doi``) and refuses a download that does not match. The zip
  is unpacked into ``<cache>/mlbench/<domain>/`` so that ``<domain>_domain/train`` exists, as in
  the benchmark's ``data_download.ipynb``.
- Templates: ``format_predictions/templates/<var>_<domain>.nc`` of the benchmark's repository at a
  pinned commit, with their SHA-256 written below (any copy found is checked against it).

Offline, both say what to download and where to put it; an archive already unpacked in the cache
(or anywhere passed as ``root``) is used without any network access.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.data.paths import REPO_ROOT, cache_dir
from engine.mlbench.protocol import VARIABLES, MLBenchError, get_domain

ZENODO_DOI = "10.5281/zenodo.17957264"
ZENODO_RECORD_URL = "https://zenodo.org/records/17957264"
REPOSITORY = "WCRP-CORDEX/ml-benchmark"
TEMPLATE_COMMIT = "483d19855fbf6f96ccabad35da8edce0862ba32f"
TEMPLATE_SHA256 = {
    ("pr", "ALPS"): "6e804c11c20ef1e15e06a3be65086c0d3be0e1dc116c2531ccec1d9bbbced30e",
    ("tasmax", "ALPS"): "bc6e676f6884aa87a670e760e444e4540621e5f38f2c91c3c531f39a7910a6a7",
    ("pr", "NZ"): "155118f8861e43d44d56aed6866ab0d08b90838728d8e81080bbb4eacf4e9ad7",
    ("tasmax", "NZ"): "bd0ecce589d94698e503a3945fe85bbee3d702f06e28500da5f3a0600ea99365",
    ("pr", "SA"): "ce020f394afec85262ee48b6c538e5459e081bf846c31b6d841cb9db9c25563f",
    ("tasmax", "SA"): "36f771d6243abf31a8dd92a3d68b57733cac6e2c160993c6a16c05496249f40f",
}
# A development checkout keeps the ALPS and NZ templates beside the project (../shared/data).
SHARED_TEMPLATES = REPO_ROOT.parent / "shared" / "data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def template_url(variable: str, domain: str) -> str:
    return (f"https://raw.githubusercontent.com/{REPOSITORY}/{TEMPLATE_COMMIT}/"
            f"format_predictions/templates/{variable}_{domain}.nc")


def template_cache_path(variable: str, domain: str) -> Path:
    return cache_dir("mlbench/templates") / f"{variable}_{domain}.nc"


def template_path(variable: str, domain: str, download: bool = True) -> Path:
    """The benchmark's template file for ``variable`` on ``domain``, checksum-verified.

    Looks in the data cache, then in ``../shared/data`` of a development checkout, then downloads
    it with pooch (``download=True``).

    Raises
    ------
    MLBenchError
        unknown variable/domain, a copy whose checksum is wrong, or no copy and no network (the
        message names the URL and where to put the file).
    """
    get_domain(domain)
    if variable not in VARIABLES:
        raise MLBenchError(f"unknown ML-Bench variable {variable!r}; accepted: {', '.join(VARIABLES)}")
    expected = TEMPLATE_SHA256[(variable, domain)]
    for candidate in (template_cache_path(variable, domain), SHARED_TEMPLATES / f"mlbench_template_{variable}_{domain}.nc"):
        if candidate.is_file():
            if _sha256(candidate) != expected:
                raise MLBenchError(
                    f"template {candidate} does not match the benchmark's (SHA-256 {_sha256(candidate)[:12]}..., "
                    f"expected {expected[:12]}...); delete it to have it downloaded again")
            return candidate
    if not download:
        raise MLBenchError(f"no template for {variable} on {domain}; expected at {template_cache_path(variable, domain)}")
    import pooch

    url = template_url(variable, domain)
    target = template_cache_path(variable, domain)
    try:
        return Path(pooch.retrieve(url, known_hash=f"sha256:{expected}", fname=target.name, path=target.parent,
                                   progressbar=False))
    except Exception as exc:
        raise MLBenchError(
            f"could not download the ML-Bench template {variable}_{domain}.nc from {url} "
            f"({type(exc).__name__}: {str(exc)[:200]}). Offline, copy format_predictions/templates/"
            f"{variable}_{domain}.nc of {REPOSITORY} to {target}") from None


def archive_root(domain: str, root: str | Path | None = None) -> Path:
    """The unpacked ``<domain>_domain`` folder: under ``root`` when given, else in the cache."""
    get_domain(domain)
    base = Path(root) if root is not None else cache_dir("mlbench") / domain
    inner = base / f"{domain}_domain"
    return inner if inner.is_dir() or not (base / "train").is_dir() else base


def download_archive(domain: str, root: str | Path | None = None) -> Path:
    """The real benchmark archive of ``domain``, downloaded and unpacked once (pooch, Zenodo md5).

    Returns the ``<domain>_domain`` folder. Nothing is downloaded when it is already there.

    Raises
    ------
    MLBenchError
        offline or Zenodo unreachable: the message gives the record's URL, the file name and the
        folder to unzip it into.
    """
    folder = archive_root(domain, root)
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return folder
    base = Path(root) if root is not None else cache_dir("mlbench") / domain
    fname = f"{domain}_domain.zip"
    import pooch

    try:
        registry = pooch.create(path=base, base_url=f"doi:{ZENODO_DOI}/", registry=None)
        registry.load_registry_from_doi()  # Zenodo's md5 checksum of every file of the record
        registry.fetch(fname, processor=pooch.Unzip(extract_dir="."), progressbar=False)
    except Exception as exc:
        raise MLBenchError(
            f"could not download the ML-Bench {domain} archive ({fname}, ~5 GB) from {ZENODO_RECORD_URL} "
            f"(DOI {ZENODO_DOI}): {type(exc).__name__}: {str(exc)[:200]}. Network access is needed once; "
            f"offline, download {ZENODO_RECORD_URL}/files/{fname} elsewhere and unzip it into {base} "
            f"(so that {base / (domain + '_domain') / 'train'} exists), or use the stand-in: "
            f"python -m engine mlbench standin --domain {domain}") from None
    folder = archive_root(domain, root)
    if not (folder / "train").is_dir():
        raise MLBenchError(f"the {domain} archive unpacked into {base} has no train/ folder; its layout changed?")
    return folder
