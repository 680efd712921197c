"""The age group of a clip sent without one, read from the clip itself: the fusion's age head.

A request that names no age group (the API's default) used to be scored with the third age embedding, which
no training clip carries (the data hold neonates and adults only): 13.5% worse than with the age
(docs/EVALUATION.md, *No age group*). A newborn's cry and face differ plainly from an adult's, so after
training a logistic regression on the encoders' pooled tokens (``model.age_cues``) learns P(adult) from
clips whose age is known, and such a request is scored with the neonate and adult embeddings mixed by it.
It is fitted on the validation clips, as sent and with either modality masked (a request may carry one
only), at the end of `avpenet train` and by `avpenet calibrate --only-unknown-age`, when they hold enough
subjects of each age group (MIN_SUBJECTS_PER_GROUP); the weights of the
network do not move, and a request that names its age group is answered exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from avpenet import contract as C
from avpenet.model import AVPENet, age_cues, valid_masks
from avpenet.predict import INPUT_NAMES, concat_inputs

L2 = 1e-3  # on standardised cues: a few hundred windows per group already separate cleanly
# Subjects of EACH age group the head is fitted on, at least. Its ~2D+2 weights separate any handful of
# subjects by who they are rather than by their age: a 1-epoch run on 6 subjects fitted it on one neonate and
# one adult, called its fit 100% right, and then read an adult clip as a neonate (P(adult) 0.01), so the
# gateway questioned a correct age group. Below this the head is left as it was: a head fitted before stays
# and reads the age; else none (adult_probability contract.NOT_READ, no age group questioned, the third
# embedding for requests without one). 5 is a judgement
# (one atypical subject is at most a fifth of its group), not a measurement; the reference's was fitted on
# ~20 validation subjects per group and many more fresh ones (docs/EVALUATION.md, *No age group*).
MIN_SUBJECTS_PER_GROUP = 5
ADULT = C.age_index("adult")
PATHS = ("as_sent", "audio_only", "face_only")  # what the head is fitted and judged on (with_one_modality)


@torch.no_grad()
def window_cues(model: AVPENet, inputs: Sequence[dict[str, np.ndarray]], batch: int = 64) -> np.ndarray:
    """The age head's input for every window of these clips, (N, 2D+2), through the model's own encoders."""
    model.eval()
    x = concat_inputs(inputs)
    rows = []
    for lo in range(0, len(x[C.AGE_GROUP.name]), batch):
        b = {k: torch.from_numpy(np.ascontiguousarray(x[k][lo : lo + batch])) for k in INPUT_NAMES}
        names = (C.WAVEFORM, C.VISUAL_FEATURES, C.FRAME_MASK, C.AUDIO_PRESENT)
        audio, visual = model.tokens(*(b[t.name] for t in names))
        a_valid, v_valid = valid_masks(audio, b[C.FRAME_MASK.name], b[C.AUDIO_PRESENT.name])
        rows.append(age_cues(audio, visual, a_valid, v_valid).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.fusion.age_head.in_features), np.float32)


def p_adult(model: AVPENet, cues: np.ndarray) -> np.ndarray:
    """The fitted head's P(adult) for each row of cues."""
    with torch.no_grad():
        return torch.sigmoid(model.fusion.age_head(torch.from_numpy(cues))).numpy()[:, 0]


def with_one_modality(inputs: Sequence[dict[str, np.ndarray]]) -> list[list[dict[str, np.ndarray]]]:
    """These clips as sent (PATHS[0]), with the face masked, and with the audio masked: a request may carry
    one modality only, and then the other's pooled tokens are zeros the head must learn to pass over."""
    from avpenet.train import mask_audio, mask_face

    def masked(x: dict[str, np.ndarray], mask) -> dict[str, np.ndarray]:
        x = dict(x)
        mask(x)
        return x

    return [list(inputs), [masked(x, mask_face) for x in inputs], [masked(x, mask_audio) for x in inputs]]


def fit_age_head(model: AVPENet, inputs: Sequence[dict[str, np.ndarray]], subjects: Sequence[str]) -> dict:
    """Fit ``fusion.age_head`` on these clips' windows, labelled with the age group each clip carries, and
    switch the inference on (``fusion.infers_age``); the record (subjects per group, windows, accuracy per
    path on the very windows it was fitted on: in-sample, not a validation figure; `avpenet evaluate
    --send-age unknown` measures it on the test subjects). It is fitted on them as sent and with one
    modality masked (``with_one_modality``). `subjects`: each clip's subject. Fewer than
    MIN_SUBJECTS_PER_GROUP subjects of either group (a run on part of a dataset, a hospital's adults-only
    fine-tune) cannot teach it and leave the model as it was: a head fitted before (the reference's)
    stays, else the third embedding."""
    ages = np.concatenate([x[C.AGE_GROUP.name][:, 0] for x in inputs]) if inputs else np.zeros(0, np.int64)
    if np.any(ages == C.UNKNOWN_AGE):
        raise ValueError("fitting the age head needs every clip's own age group; some were sent as unknown")
    count = {
        group: len({s for x, s in zip(inputs, subjects, strict=True) if x[C.AGE_GROUP.name][0, 0] == index})
        for group, index in ((g, C.age_index(g)) for g in C.LABELLED_AGE_GROUPS)
    }
    if min(count.values()) < MIN_SUBJECTS_PER_GROUP:
        kept = "the head it had" if float(model.fusion.infers_age) else "the third embedding"
        held = " and ".join(f"{n} {group}" for group, n in count.items())
        why = "one age group only" if min(count.values()) == 0 else "too few subjects"
        return {
            "fitted": False,
            "kept_head": bool(float(model.fusion.infers_age)),  # still reads the age, from its earlier fit
            "why": f"{why}: {held} subject(s), {MIN_SUBJECTS_PER_GROUP} of each needed; kept {kept}",
            "subjects": count,
            "windows": len(ages),
        }
    cues = torch.from_numpy(
        np.concatenate([window_cues(model, x) for x in with_one_modality(inputs)])
    ).double()
    y = torch.from_numpy(np.tile(ages == ADULT, 3).astype(np.float64))
    mean, std = cues.mean(0), cues.std(0).clamp_min(1e-6)
    z = (cues - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        solver.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + 0.5 * L2 * (w @ w)
        value.backward()
        return value

    solver.step(loss)
    with torch.no_grad():  # fold the standardisation into the head: it reads raw cues in the graph
        head = model.fusion.age_head
        head.weight.copy_((w / std).float()[None, :])
        head.bias.copy_((b - (mean / std) @ w).float())
        model.fusion.infers_age.fill_(1.0)
    right = ((p_adult(model, cues.float().numpy()) > 0.5) == y.numpy().astype(bool)).reshape(3, -1).mean(1)
    return {"fitted": True, "clips": len(inputs), "subjects": count, "windows": int(len(ages)),
            "adult_windows": int((ages == ADULT).sum()),
            "in_sample_window_accuracy": dict(zip(PATHS, map(float, right), strict=True))}  # fmt: skip


def inferred_age_accuracy(
    model: AVPENet, inputs: Sequence[dict[str, np.ndarray]], ages: Sequence[str]
) -> dict[str, dict[str, float]]:
    """How often the head names the right group, for each of PATHS: per window and per clip (mean P over
    its windows), for clips whose own group is `ages` (their inputs may carry any age: the head reads none).
    """
    return {
        path: _accuracy(model, sent, ages)
        for path, sent in zip(PATHS, with_one_modality(inputs), strict=True)
    }


def _accuracy(
    model: AVPENet, inputs: Sequence[dict[str, np.ndarray]], ages: Sequence[str]
) -> dict[str, float]:
    cues = window_cues(model, inputs)
    p = p_adult(model, cues)
    bounds = np.cumsum([0] + [len(x[C.AGE_GROUP.name]) for x in inputs])
    own = np.repeat([a == "adult" for a in ages], np.diff(bounds))
    # a clip's reading as the gateway reports it (aggregate.adult_probability): the mean over the windows
    # with a modality; a clip without one reports none, so it is not counted
    informed = np.concatenate([(x[C.AUDIO_PRESENT.name][:, 0] > 0.5) | (x[C.FRAME_MASK.name].max(1) > 0.5)
                               for x in inputs])  # fmt: skip
    spans = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    read = [i for i, span in enumerate(spans) if informed[span].any()]
    clip_p = np.array([p[spans[i]][informed[spans[i]]].mean() for i in read])
    adult = np.array([ages[i] == "adult" for i in read])
    shown = np.round(clip_p, C.PROBABILITY_DECIMALS)  # the gateway decides on the P its answer shows
    p_own = np.where(adult, shown, 1.0 - shown)  # P(the clip's own group)
    return {
        "window_accuracy": float(np.mean((p > 0.5) == own)),
        "clip_accuracy": float(np.mean((clip_p > 0.5) == adult)),
        "clips_read": len(read),
        # a request naming the clip's own group that the gateway would question (a false alarm), and one
        # naming the other group that it would (a mistyped age caught): contract.AGE_CONTRADICTED_BELOW
        "questioned_named_right": int(np.sum(p_own < C.AGE_CONTRADICTED_BELOW)),
        "questioned_named_wrong": int(np.sum(1.0 - p_own < C.AGE_CONTRADICTED_BELOW)),
    }
