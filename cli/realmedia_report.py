"""What a model does on the real-media smoke set: scores per clip and the plot in docs/EVALUATION.md.

    python -m cli.realmedia_report [--checkpoint RUN_DIR] [--plot docs/img/realmedia_scores.png]

Each clip is decoded and face-tracked by the shared feature code (the gateway's calls), masked as the gateway
masks it (preprocess_service.masking) and scored by the PyTorch model (the served ONNX parts match it to
1e-5, tests/gateway/test_gateway.py). Printed: the fused score and the audio-only and face-only scores of the
same clip, so a reader sees which modality moved the answer.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from avpenet import contract as C
from avpenet import realmedia


def score_clips(checkpoint: Path | None = None) -> list[dict]:
    """Build the clips in a temporary folder and score each: fused, audio-only, face-only."""
    from avpenet.features import avclip, tracker, windows
    from avpenet.model import load_model
    from avpenet.predict import predict_clips
    from avpenet.train import mask_audio, mask_face
    from preprocess_service import masking

    model = load_model(checkpoint).model
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in realmedia.build(Path(tmp)):
            data = (Path(tmp) / row["clip"]).read_bytes()
            wave, track = avclip.decode_clip(data, tracker.VideoLimits(), name=row["clip"])  # as served
            x = windows.model_inputs(wave, track, "adult")
            used, masked = masking.apply(x, wave, track)
            res = {"fused": x}
            if "audio" in used and "visual" in used:
                res["audio only"], res["face only"] = dict(x), dict(x)
                mask_face(res["audio only"])
                mask_audio(res["face only"])
            scores = {k: float(predict_clips(model, [v])[C.SCORE.name][0]) for k, v in res.items()}
            face = 0.0 if track is None else float(np.mean(track.face_present))
            out.append({**row, **scores, "used": "+".join(used), "face_found": face})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| clip | kind | used | fused | audio only | face only |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[k]:.2f}" if k in r else "–" for k in ("fused", "audio only", "face only")]
        lines.append(f"| {r['clip'][:-4]} | {r['kind']} | {r['used']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Distress vs calm per face+voice pair: fused, audio-only and face-only scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(v.face, v.name) for v in realmedia.VOICES]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, key in zip(axes, ("fused", "audio only", "face only"), strict=True):
        for j, kind in enumerate(("calm", "distress")):
            vals = [
                next(r[key] for r in rows if (r["face"], r["voice"], r["kind"]) == (*p, kind)) for p in pairs
            ]
            ax.bar(np.arange(len(pairs)) + (j - 0.5) * 0.38, vals, 0.38, label=kind)
        ax.set_xticks(range(len(pairs)), [f"{f}\n+{v}" for f, v in pairs], fontsize=8)
        ax.set_title(key)
        ax.set_ylim(0, 10)
    axes[0].set_ylabel("reference score (0-10)")
    axes[0].legend()
    fig.suptitle("Real faces + real vocalisations: distress vs calm, same face and voice actor", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cli.realmedia_report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="run directory (default: the reference)"
    )
    parser.add_argument("--plot", type=Path, help="write the distress/calm bar plot here")
    args = parser.parse_args(argv)
    if not realmedia.available():
        print(realmedia._missing())
        return 2
    rows = score_clips(args.checkpoint)
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
