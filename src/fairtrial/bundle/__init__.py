"""Bundles: one portable, integrity-checked archive per experiment; read without running it.

Format: a gzip-compressed tar archive (``.tar.gz``) whose first member is ``manifest.json``
(format name and version, fairtrial version, experiment, and the sha256 and size of every
other member). tar.gz over zip because it is one stream with one checksum (gzip's CRC-32 over
the whole uncompressed archive, RFC 1952) in addition to the manifest's per-file sha256, and
because fairtrial writes it byte-for-byte deterministically (fixed gzip header with mtime 0,
sorted members, zeroed owners and times): the same experiment gives the same bundle, so a
bundle's sha256 identifies it.

Layout::

    manifest.json                 sha256 + size of every other member
    experiment.json               the ledger's experiment row (normalised spec, arms, task, ...)
    spec.toml                     the normalised spec as TOML (what ``replicate`` runs)
    preregistration.json          the preregistration and its deviations (or null)
    code/snapshot.json            recipe, files and hashes, git commit/branch/dirty
    code/git.diff                 uncommitted changes of the repository the spec lives in
    code/files/PATH               the recipe's files (relative to the spec's folder)
    code/external/PATH            recipe modules from outside it (installed packages), for diff
    environment/lock.json         interpreter, platform and every package version
    environment/requirements.txt  the same packages as ``name==version`` lines
    environment/provenance.json   every provenance record the trials point at
    task.json                     task name and checksums
    results/trials.json           every trial: arm, seed, status, result, seeds, config, ...
    results/metrics.jsonl         every logged metric point
    results/analysis.json         the analysis (fairtrial.results; docs/results-schema.md)
    results/compute.json          each trial's compute record (times, FLOPs, memory, energy)
    results/repeats.json          baseline trials run twice: their compute (the timing noise)
    results/predictions.json      each finished trial's test predictions (hashes in testlog.json)
    testlog.json                  the experiment's sealed test log entries, with their hashes

Reading (:func:`read_bundle`) never imports or runs anything from the bundle. It validates
every member before extracting any (regular files and folders only: no links, devices or
fifos; no absolute paths, ``..``, backslashes or duplicate names; limits on member count,
member size, total size, path depth, compression ratio and tar header size, counted on the
decompressed stream as it is read, so a decompression bomb is refused before a byte reaches
disk; see :class:`Limits`), extracts into a fresh temporary folder only, reads the gzip stream
to its end so its CRC is checked, and then compares every file with the manifest, naming each
file that differs. Safe extraction follows the advice of CPython's ``tarfile`` documentation on
untrusted archives (extraction filters, PEP 706). The JSON members are then checked for depth
(before parsing: Python's parser recurses) and for the types their readers use, names that
become folder names against the spec's rule; each failure names the member and the field.

The code is split by job: :mod:`~fairtrial.bundle.archive` (deterministic writing, the safe
streaming reader and its limits), :mod:`~fairtrial.bundle.contents` (what goes into a bundle,
from the ledger), :mod:`~fairtrial.bundle.checks` (manifest, member shapes, cross-member
consistency) and :mod:`~fairtrial.bundle.reader` (:func:`read_bundle` and :class:`Bundle`);
the spec file writer is :func:`fairtrial.tomlw.spec_toml`. Import from this package.
"""

from __future__ import annotations

from fairtrial.bundle.archive import (
    FORMAT,
    FORMAT_VERSION,
    GZIP_HEADER,
    MANIFEST,
    Limits,
    _deterministic_gzip,
    _dumps,
    file_sha256,
    json_too_deep,
    load_json,
    write_archive,
)
from fairtrial.bundle.contents import bundle_files, write_bundle
from fairtrial.bundle.reader import Bundle, open_archive, read_bundle, verify_bundle
from fairtrial.tomlw import spec_toml

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GZIP_HEADER",
    "MANIFEST",
    "Bundle",
    "Limits",
    "_deterministic_gzip",
    "_dumps",
    "bundle_files",
    "file_sha256",
    "json_too_deep",
    "load_json",
    "open_archive",
    "read_bundle",
    "spec_toml",
    "verify_bundle",
    "write_archive",
    "write_bundle",
]
