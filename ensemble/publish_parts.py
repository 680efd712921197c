"""New part versions into a model repository, all or none: the publishing step `avpenet export` and
`avpenet quantize` share, so a disk error on either leaves every part, record and config as it was."""

from __future__ import annotations

from pathlib import Path

from avpenet import contract
from ensemble import configs, versions
from ensemble.publish import Publication

# (part, files of its would-be version, manifest fields): what an export or a quantisation made
Made = tuple[contract.ModelSpec, dict[str, bytes], dict]


def publish_parts(
    tx: Publication, repo: Path, made: list[Made], keep: int, source: dict | None = None
) -> dict[str, dict]:
    """Every changed part's new version written (hidden), then renamed into place, then pruned, the records
    and the configs rewritten last, so no config names a graph before it is on disk; returns
    {part: {"version", "created", "pruned"}}. `source`: the run an export published (the ensemble's record
    is then fresh); None keeps the record's and changes only the versions it names as served."""
    tx.make_dirs(repo)
    staged = [(spec, *versions.stage_version(tx, repo / spec.name, f, m)) for spec, f, m in made]
    for spec, version, staging in staged:
        if staging is not None:
            tx.move(staging, repo / spec.name / str(version))
    report: dict[str, dict] = {}
    for spec, version, staging in staged:
        pruned = versions.prune(repo / spec.name, keep, tx)
        versions.record_highest(tx, repo / spec.name)
        report[spec.name] = {"version": version, "created": staging is not None, "pruned": pruned}
    for path, text in configs.render_configs(repo, source=source).items():
        tx.write_text(path, text)
    return report
