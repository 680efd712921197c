"""The precision each part of a model repository is served at: which graph file of its newest version the
part's config.pbtxt names (configs.py writes it as `onnx_file`).

Each repository carries its own choice. The committed one's is `ensemble/precision.json` (tracked, reviewed
with the code); any other repository (a copy, a hospital's export) may hold a `precision.json` at its top,
beside the model folders (Triton loads model folders only, so it ignores the file). A repository without one
follows ensemble/precision.json, and takes a copy of that choice the first time its configs are written
(configs.render_configs: export, quantize, `ensemble.configs`), so a later change to the tracked file does not
switch its served graphs unannounced; a copy of the committed repository serves as the original did. Why per
repository: `avpenet quantize --repo COPY` used to say "edit ensemble/precision.json", which changed the
committed repository's choice and left the copy's new int8 versions serving fp32 unnoticed.
`python -m ensemble.configs --repo R --precision part=int8,...` writes R's choice and rewrites its configs.
"""

from __future__ import annotations

import json
from pathlib import Path

from avpenet import contract
from ensemble import DEFAULT_REPOSITORY, versions

PRECISION_FILE = "precision.json"
PRECISION_PATH = Path(__file__).resolve().parent / PRECISION_FILE  # the committed repository's choice
# "fp32" is the exported graph (model.onnx; the frontend's DFT inside it runs in float64, librosa parity
# ~1e-6). "int8": the encoders' and fusion's quantised graph, made by `avpenet quantize`. "fp32-dft": the
# frontend with its DFT in float32, written by `avpenet export` beside model.onnx (~2x faster frontend;
# log-mel within ~3e-3 of librosa in the quietest bands, ensemble/README.md *Frontend precision*).
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp32-dft": "model.fp32-dft.onnx"}
MADE_BY = {"int8": "`avpenet quantize`", "fp32-dft": "`avpenet export`"}
PRECISIONS: dict[str, tuple[str, ...]] = {
    p.name: ("fp32", "fp32-dft") if p is contract.AUDIO_FRONTEND else ("fp32", "int8") for p in contract.PARTS
}


def load_precision(path: Path = PRECISION_PATH) -> dict[str, str]:
    """{part: precision} from a precision.json (parts not named: fp32); raises on a value PRECISIONS lacks."""
    chosen = json.loads(Path(path).read_text()).get("parts", {}) if Path(path).exists() else {}
    bad = {k: v for k, v in chosen.items() if v not in PRECISIONS.get(k, ())}
    if bad:
        raise ValueError(f"{path}: unknown parts or precisions {bad}; each part's choices: {PRECISIONS}")
    return {p.name: chosen.get(p.name, "fp32") for p in contract.PARTS}


def own_path(repo: Path) -> Path:
    """Where `repo`'s own choice is kept: ensemble/precision.json for the committed repository, else
    REPO/precision.json."""
    committed = Path(repo).resolve() == DEFAULT_REPOSITORY.resolve()
    return PRECISION_PATH if committed else Path(repo) / PRECISION_FILE


def precision_path(repo: Path) -> Path:
    """The file `repo`'s choice is read from: its own (`own_path`) where it exists, else
    ensemble/precision.json."""
    own = own_path(repo)
    return own if own.exists() else PRECISION_PATH


def repository_precision(repo: Path) -> dict[str, str]:
    """{part: precision} chosen for `repo` (`precision_path`)."""
    return load_precision(precision_path(repo))


def parse_choice(text: str, flag: str = "--precision") -> dict[str, str]:
    """ "part=precision,..." -> {part: precision}, each checked against PRECISIONS (a ValueError naming
    `flag`)."""
    items = [item.strip().partition("=") for item in text.split(",") if item.strip()]
    chosen = {part.strip(): value.strip() for part, _, value in items}
    bad = {p: v for p, v in chosen.items() if v not in PRECISIONS.get(p, ())}
    if not chosen or bad:
        raise ValueError(f"{flag}: {bad or text!r}; choose part=precision from {PRECISIONS}")
    return chosen


def choice_text(chosen: dict[str, str]) -> str:
    """A precision.json's text for {part: precision} (every part named, in the contract's order)."""
    return json.dumps({"parts": {p.name: chosen.get(p.name, "fp32") for p in contract.PARTS}}) + "\n"


def served_precision(repo: Path, part: str, wanted: str) -> str:
    """`wanted`, or fp32 when the part's newest version has no graph of that precision (e.g. re-exported)."""
    version = versions.latest(Path(repo) / part)
    if wanted != "fp32" and (
        version is None or not (Path(repo) / part / str(version) / ONNX_FILES[wanted]).exists()
    ):
        return "fp32"
    return wanted


def int8_note(repo: Path, made: dict[str, int], shown_repo: str | None = None) -> str:
    """What serves the int8 versions `made` ({part: version}) hold: said plainly when the repository's
    choice still names fp32 for them, with the command that switches them (naming `repo` as the user gave
    it, `shown_repo`)."""
    import shlex

    chosen, source = repository_precision(repo), precision_path(repo)
    named = ", ".join(f"{part} version {version}" for part, version in made.items())
    fp32 = [p for p in made if chosen.get(p) != "int8"]
    if not fp32:
        return f"served at int8: {named} ({source} chooses int8)"
    whose = "" if source == own_path(repo) else f"{repo} has no {PRECISION_FILE} of its own, so "
    switch = ",".join(f"{p}=int8" for p in fp32)
    command = f"python -m ensemble.configs --repo {shlex.quote(shown_repo or str(repo))} --precision {switch}"
    return (
        f"{named}: int8 graph{'s' if len(made) > 1 else ''} ready, but {', '.join(fp32)} still "
        f"serve{'' if len(fp32) > 1 else 's'} fp32 ({whose}{source} chooses fp32). "
        f"To serve int8: `{command}` (writes {own_path(repo)} and rewrites the configs)"
    )
