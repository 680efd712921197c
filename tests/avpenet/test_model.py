"""AVPENet model: contract shapes, masking of absent modalities, log-mel parity, ONNX export of every part."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.reference import librosa_log_mel

from avpenet import contract as C
from avpenet.aggregate import aggregate_windows
from avpenet.model import AudioFrontend, AVPENet, AVPENetConfig, example_inputs, load_model, save_model


@pytest.fixture(scope="module")
def model() -> AVPENet:
    torch.manual_seed(0)
    return AVPENet().eval()


def _realistic_window(seed: int) -> np.ndarray:
    """A vocalisation-like harmonic sweep in coloured background noise, RMS-normalised like the features."""
    rng = np.random.default_rng(seed)
    t = np.arange(C.WINDOW_SAMPLES) / C.SAMPLE_RATE
    f0 = rng.uniform(100, 600) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / C.SAMPLE_RATE
    voice = sum(np.sin(h * phase) / h for h in range(1, 8)) * (t > rng.uniform(0, 1.5))
    noise = np.cumsum(rng.standard_normal(t.size)) * 1e-3 + rng.standard_normal(t.size) * 10 ** rng.uniform(
        -3, -1
    )
    w = voice + noise
    return (w / np.sqrt(np.mean(w**2)) * 10 ** (C.AUDIO_TARGET_RMS_DBFS / 20)).astype(np.float32)


class TestShapes:
    def test_parameter_budget(self, model):
        assert model.num_params() <= 5_000_000
        assert {n for n, _ in model.named_children()} == {spec.name for spec in C.PARTS}

    @pytest.mark.parametrize("spec", C.PARTS, ids=lambda s: s.name)
    def test_each_part_matches_contract(self, model, spec):
        with torch.no_grad():
            out = model.part(spec.name)(*example_inputs(spec, batch=3))
        out = out if isinstance(out, tuple) else (out,)
        assert [tuple(o.shape) for o in out] == [(3, *t.shape) for t in spec.outputs]

    def test_ensemble_outputs(self, model):
        with torch.no_grad():
            out = model(*example_inputs(C.MODEL_INPUTS, batch=5))
        assert list(out) == [t.name for t in C.ENSEMBLE.outputs]
        score, probs, interval, weights = (
            out["score"],
            out["class_probs"],
            out["interval_90"],
            out["modality_weights"],
        )
        assert ((score >= C.SCORE_MIN) & (score <= C.SCORE_MAX)).all()
        assert torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-5)
        assert ((interval[:, :1] <= score) & (score <= interval[:, 1:])).all()
        assert ((interval >= C.SCORE_MIN) & (interval <= C.SCORE_MAX)).all()
        assert torch.allclose(weights.sum(-1), torch.ones(5), atol=1e-5)


class TestMasks:
    def _run(self, model, audio: bool, face: bool, frames_valid: int = C.FRAMES_PER_WINDOW):
        wave, feats, mask, present, age = example_inputs(C.MODEL_INPUTS, batch=4, seed=3)
        mask = mask.clone()
        mask[:, frames_valid:] = 0
        if not face:
            mask.zero_()
            feats = torch.full_like(feats, 1e3)  # garbage behind a zero mask must not matter
        if not audio:
            present = torch.zeros_like(present)
        with torch.no_grad():
            return model(wave, feats, mask, present, age), (wave, feats, mask, present, age)

    @pytest.mark.parametrize(("audio", "face"), [(True, False), (False, True), (False, False)])
    def test_absent_modality_gives_finite_outputs(self, model, audio, face):
        out, _ = self._run(model, audio, face)
        for name, value in out.items():
            assert torch.isfinite(value).all(), name
        weights = out["modality_weights"]
        assert torch.all(weights[:, 0] == 0) if not audio else torch.all(weights[:, 0] > 0)
        assert torch.all(weights[:, 1] == 0) if not face else torch.all(weights[:, 1] > 0)

    def test_absent_audio_ignores_the_waveform(self, model):
        out, (wave, feats, mask, present, age) = self._run(model, audio=False, face=True)
        with torch.no_grad():
            other = model(torch.randn_like(wave), feats, mask, present, age)
        assert torch.allclose(out["score"], other["score"], atol=1e-5)

    def test_masked_frames_are_ignored(self, model):
        out, (wave, feats, mask, present, age) = self._run(model, audio=True, face=True, frames_valid=12)
        feats = feats.clone()
        feats[:, 12:] = 50.0  # change only frames the mask hides
        with torch.no_grad():
            other = model(wave, feats, mask, present, age)
        assert torch.allclose(out["score"], other["score"], atol=1e-5)

    def test_age_group_changes_the_prediction(self, model):
        wave, feats, mask, present, _ = example_inputs(C.MODEL_INPUTS, batch=2)
        with torch.no_grad():
            scores = [model(wave, feats, mask, present, torch.full((2, 1), i))["score"] for i in range(3)]
        assert not torch.allclose(scores[0], scores[1])


class TestFrontend:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_parity_with_librosa(self, model, seed):
        wave = _realistic_window(seed)
        with torch.no_grad():
            ours = model.audio_frontend.windows(torch.from_numpy(wave)[None])[0].numpy()
        assert np.abs(ours - librosa_log_mel(wave)).max() <= 1e-4

    def test_fp32_dft_stays_near_librosa(self):
        """The fp32-DFT frontend (a served option, ensemble/README.md *Frontend precision*) rounds the DFT's
        400-term sums: quiet bands next to loud ones lose ~1e-3 in the log, the rest ~1e-6."""
        fp32 = AudioFrontend(torch.float32).eval()
        waves = np.stack([_realistic_window(s) * 10 ** (s / 4 - 2) for s in range(12)])  # -40 to +10 dB
        with torch.no_grad():
            ours = fp32.windows(torch.from_numpy(waves)).numpy()
        err = np.abs(ours - np.concatenate([librosa_log_mel(w) for w in waves])[:, None])
        assert err.max() <= 1e-2 and err.mean() <= 1e-4

    @pytest.mark.parametrize(
        "count", [1, 2, C.MEL_FRAMES, 5 * AudioFrontend.MEL_FRAMES_PER_HOP + C.MEL_FRAMES]
    )
    def test_frames_are_the_signal_at_every_hop(self, count):
        """`frames` cuts by slices what indexing the signal at k*HOP_LENGTH + [0, N_FFT) gives, bit for bit,
        from the shortest signal it needs (the served clip of 6 windows has 5 hops of 100 frames before
        its last window's 300)."""
        q = C.N_FFT // C.HOP_LENGTH
        signal = torch.randn(3, C.HOP_LENGTH * (count + q), dtype=torch.float64)
        index = torch.arange(count)[:, None] * C.HOP_LENGTH + torch.arange(C.N_FFT)[None, :]
        assert torch.equal(AudioFrontend.frames(signal, count), signal[:, index])

    def test_parity_with_feature_reference(self, model):
        from avpenet.features import logmel

        wave = _realistic_window(7)
        with torch.no_grad():
            ours = model.audio_frontend.windows(torch.from_numpy(wave)[None])[0].numpy()
        assert np.abs(ours - logmel.reference_log_mel(wave)).max() <= 1e-4

    def test_silence_hits_the_floor(self, model):
        with torch.no_grad():
            out = model.audio_frontend.windows(torch.zeros(1, C.WINDOW_SAMPLES))
        assert torch.allclose(out, torch.full_like(out, float(np.log(C.LOG_MEL_FLOOR))))

    @pytest.mark.parametrize("seconds", [3.0, 4.5, 10.25, 60.0])
    def test_served_clip_rows_give_the_windows_log_mel(self, model, seconds):
        """The served graph gets the clip once plus each window's gain and cuts the windows itself; it must
        give the log-mel of `windows`. The gain multiplies the fp64 power rather than the fp32 samples, so
        bands near the floor differ by the windows' own fp32 rounding (~1e-3 at most, seen); others ~1e-5."""
        from avpenet.features import audio

        rng = np.random.default_rng(int(seconds * 4))
        wave = np.concatenate([_realistic_window(s) * rng.uniform(0.05, 3.0) for s in range(21)])
        wave = wave[: int(seconds * C.SAMPLE_RATE)]
        n = audio.window_count(wave.size)
        rows, gains = audio.clip_rows(wave, n)
        with torch.no_grad():
            served = model.audio_frontend(torch.from_numpy(rows), torch.from_numpy(gains)).numpy()
            windows = model.audio_frontend.windows(torch.from_numpy(audio.windows(wave))).numpy()
        assert served.shape == windows.shape == (n, 1, C.N_MELS, C.MEL_FRAMES)
        assert np.abs(served - windows).max() <= 5e-3
        assert np.quantile(np.abs(served - windows), 0.999) <= 1e-4

    def test_served_rows_of_several_requests_stay_apart(self, model):
        """Triton stacks requests of one shape: R clips of N windows each must not bleed into each other."""
        from avpenet.features import audio

        waves = [np.concatenate([_realistic_window(s), _realistic_window(9)[:8000]]) for s in (3, 4)]  # 3.5 s
        n = audio.window_count(waves[0].size)
        assert n == 2
        laid = [audio.clip_rows(w, n) for w in waves]
        with torch.no_grad():
            stacked = model.audio_frontend(
                torch.from_numpy(np.concatenate([r for r, _ in laid])),
                torch.from_numpy(np.concatenate([g for _, g in laid])),
            ).numpy()
            alone = [model.audio_frontend(torch.from_numpy(r), torch.from_numpy(g)).numpy() for r, g in laid]
        # a bleed would move values by whole units; 1e-5 leaves room for a last float32 bit of the fp64
        # matmuls, which another CPU's kernels may round differently for another batch size
        np.testing.assert_allclose(stacked, np.concatenate(alone), atol=1e-5)

    def test_served_rows_are_cut_on_the_inputs_device(self):
        """The frontend's window indices are made where the audio is: on a GPU (loadtests.device_stage) they
        were made on the CPU and the call failed. The meta device stands in for the GPU here."""
        frontend = AudioFrontend(torch.float32).to("meta")
        n = 3
        audio = torch.zeros(n, C.audio_row_samples(n), device="meta")
        out = frontend(audio, torch.ones(n, 1, device="meta"))
        assert out.device.type == "meta" and out.shape == (n, 1, C.N_MELS, C.MEL_FRAMES)


@pytest.mark.parametrize("spec", C.PARTS, ids=lambda s: s.name)
def test_onnx_export_matches_torch(model, spec, tmp_path):
    import onnxruntime as ort

    from ensemble.onnx_export import dynamic_axes

    part = model.part(spec.name).eval()
    path = tmp_path / f"{spec.name}.onnx"
    names = [t.name for t in (*spec.inputs, *spec.outputs)]
    torch.onnx.export(
        part, example_inputs(spec, batch=2), str(path), dynamo=False, opset_version=17,
        input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
        dynamic_axes={n: dynamic_axes(n) for n in names},
    )  # fmt: skip
    inputs = example_inputs(spec, batch=5, seed=1)  # another batch size: the batch axis is dynamic
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {t.name: x.numpy() for t, x in zip(spec.inputs, inputs, strict=True)})
    with torch.no_grad():
        ref = part(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for t, g, r in zip(spec.outputs, got, ref, strict=True):
        assert np.abs(g - r.numpy()).max() <= 1e-4, t.name


def test_aggregate_windows_is_mean_with_calibrated_interval():
    agg = aggregate_windows(
        score=np.array([[2.0], [4.0]]), log_variance=np.log([[0.25], [1.0]]),
        class_probs=np.array([[1.0, 0, 0], [0, 1.0, 0]]), modality_weights=np.array([[1.0, 0], [0.5, 0.5]]),
    )  # fmt: skip
    assert agg["score"] == pytest.approx(3.0)
    half = 1.6448536 * np.sqrt(0.625)  # the clip spread is the mean of the window variances
    assert np.allclose(agg["interval_90"], [3.0 - half, 3.0 + half], atol=1e-5)
    assert np.allclose(agg["class_probs"], [0.5, 0.5, 0.0]) and np.allclose(
        agg["modality_weights"], [0.75, 0.25]
    )


def test_a_window_with_neither_modality_does_not_enter_the_clip_score():
    """Its score is the model's age prior, not the patient: left out while another window has a modality."""
    agg = aggregate_windows(
        score=np.array([[1.0], [5.7], [2.0]]), log_variance=np.log([[0.25], [4.0], [0.25]]),
        class_probs=np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]]),
        modality_weights=np.array([[0.0, 1.0], [0.0, 0.0], [0.0, 1.0]]),
    )  # fmt: skip
    assert agg["score"] == pytest.approx(1.5) and np.allclose(agg["class_probs"], [1.0, 0, 0])
    assert agg["log_variance"] == pytest.approx(np.log(0.25))
    alone = aggregate_windows(np.array([[5.7]]), np.log([[4.0]]), np.array([[0, 1.0, 0]]), np.zeros((1, 2)))
    assert alone["score"] == pytest.approx(5.7)  # a clip with no modality at all keeps what it has


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = AVPENet(AVPENetConfig(audio_width=32, n_fusion_layers=1)).eval()
    model.fusion.interval_scale.fill_(1.7)
    save_model(model, tmp_path, extra={"note": "x"})
    loaded = load_model(tmp_path)
    inputs = example_inputs(C.MODEL_INPUTS, batch=2)
    with torch.no_grad():
        assert torch.equal(model(*inputs)["interval_90"], loaded.model(*inputs)["interval_90"])
    assert loaded.config["note"] == "x" and loaded.model.cfg.n_fusion_layers == 1


def test_calibration_scale_is_folded_into_the_served_spread():
    torch.manual_seed(2)
    model = AVPENet(AVPENetConfig(audio_width=32, n_fusion_layers=1)).eval()
    inputs = example_inputs(C.MODEL_INPUTS, batch=3)
    with torch.no_grad():
        raw = model(*inputs)
        model.fusion.interval_scale.fill_(1.7)
        cal = model(*inputs)
    lv = cal[C.LOG_VARIANCE.name]
    assert torch.allclose(lv, raw[C.LOG_VARIANCE.name] + 2 * np.log(1.7), atol=1e-5)
    half = 1.6448536 * torch.exp(0.5 * lv)
    score = cal[C.SCORE.name]
    expected = torch.clamp(torch.cat([score - half, score + half], dim=-1), C.SCORE_MIN, C.SCORE_MAX)
    assert torch.allclose(cal[C.INTERVAL.name], expected, atol=1e-5)


def _with_ages(inputs: tuple[torch.Tensor, ...], ages: list[str]) -> tuple[torch.Tensor, ...]:
    names = [t.name for t in C.MODEL_INPUTS]
    at = names.index(C.AGE_GROUP.name)
    age = torch.tensor([[C.age_index(a)] for a in ages], dtype=torch.int64)
    return (*inputs[:at], age, *inputs[at + 1 :])


def test_requests_without_an_age_get_their_own_scale_and_the_others_keep_theirs():
    torch.manual_seed(3)
    model = AVPENet(AVPENetConfig(audio_width=32, n_fusion_layers=1)).eval()
    inputs = _with_ages(example_inputs(C.MODEL_INPUTS, batch=3), ["neonate", "adult", "unknown"])
    model.fusion.interval_scale.fill_(1.7)
    model.fusion.unknown_age_scale.fill_(1.7)
    with torch.no_grad():
        shared = model(*inputs)[C.LOG_VARIANCE.name]
        model.fusion.unknown_age_scale.fill_(3.4)
        own = model(*inputs)[C.LOG_VARIANCE.name]
    assert torch.equal(own[:2], shared[:2])
    assert own[2, 0] == pytest.approx(float(shared[2, 0]) + 2 * np.log(2.0), abs=1e-5)


def test_a_run_saved_before_the_unknown_age_scale_serves_such_requests_the_shared_one(tmp_path):
    torch.manual_seed(4)
    model = AVPENet(AVPENetConfig(audio_width=32, n_fusion_layers=1)).eval()
    model.fusion.interval_scale.fill_(1.7)
    save_model(model, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    del state["fusion.unknown_age_scale"]  # what runs saved before 2026-12-05 hold
    torch.save(state, tmp_path / "model.pt")
    assert float(load_model(tmp_path).model.fusion.unknown_age_scale) == pytest.approx(1.7)
