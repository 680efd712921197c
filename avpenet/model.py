"""AVPENet: pain (0-10) from 3 s of non-speech sound and face, in four separately exportable parts.

    waveform ─ audio_frontend ─ log_mel ─ audio_encoder ─ audio_tokens ─┐
    visual_features, frame_mask ─ visual_encoder ─ visual_tokens ───────┴─ fusion ─ score, class_probs, ...

Follows the AVPENet method (Naouali & El Othmani 2026; docs/ARCHITECTURE.md summarises it): a ResNet over
log-mel, a convolutional encoder over facial landmarks/AUs, cross-modal attention fusion. Unlike the public
research code it attends over token SEQUENCES (38 audio steps x 30 video frames, not one token each), encodes
per-frame landmark/AU features over time instead of a pixel-averaged image, handles a missing or masked
modality explicitly, and stays around 1.2M parameters.

Every part is plain conv/matmul/softmax math with explicit masks, so each exports to ONNX opset 17 with a
dynamic batch axis (``torch.onnx.export(part.eval(), ..., dynamo=False, opset_version=17)``) and runs on CPU
or GPU execution providers. Tensor names and shapes come from ``avpenet.contract``.

Why one module over 300 lines: the four parts share their blocks, masks and config, and the export
reads them as one; splitting them would scatter one network over files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avpenet import contract as C
from avpenet import cpus
from avpenet.aggregate import Z_INTERVAL

# Every command that runs the model comes through here: its pool must not outnumber the CPUs a container
# grants (avpenet.cpus; a lower count chosen on purpose stays).
cpus.cap_torch_threads(torch)

# Additive attention mask: finite, so a row with every key masked stays finite (no NaN).
MASK_NEG: float = -1e9


@dataclass
class AVPENetConfig:
    """Model hyper-parameters; saved in every checkpoint's config.json so a run can be rebuilt exactly."""

    embed_dim: int = C.EMBED_DIM  # token width D shared by both encoders and the fusion (contract)
    audio_stem_channels: int = 8  # 2-D stem width; with 64 bands it feeds 512 channels to the 1-D ResNet
    audio_width: int = 128  # channels of the 1-D ResNet over time
    audio_strides: tuple[int, ...] = (1, 2, 2)  # 150 stem frames -> 75 -> 38 = contract.AUDIO_TOKENS
    visual_hidden: int = 128  # temporal CNN width; the visual signal is low-dimensional, keep it narrow
    # Receptive field 15 frames = 1.5 s: one AU onset-apex-offset.
    visual_dilations: tuple[int, ...] = (1, 2, 4)
    n_heads: int = 4  # attention heads of width 32
    n_fusion_layers: int = 2  # each = bidirectional cross-attention + self-attention over both sequences
    ffn_mult: int = 2  # feed-forward width multiplier (2 keeps the fusion small; 4 added nothing here)
    dropout: float = 0.1
    visual_feature_dim: int = C.VISUAL_FEATURE_DIM

    def __post_init__(self) -> None:
        self.audio_strides = tuple(self.audio_strides)
        self.visual_dilations = tuple(self.visual_dilations)
        assert self.embed_dim % self.n_heads == 0, (
            f"embed_dim {self.embed_dim} not divisible by {self.n_heads}"
        )
        t = (C.MEL_FRAMES + 1) // 2  # after the stride-2 stem
        for stride in self.audio_strides:
            t = (t - 1) // stride + 1
        assert t == C.AUDIO_TOKENS, f"audio strides give {t} time steps, the contract wants {C.AUDIO_TOKENS}"

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------
# 1. audio_frontend: waveform -> log-mel, STFT as a matmul with a fixed DFT basis
# ----------------------------------------------------------------------------------------------------


class AudioFrontend(nn.Module):
    """librosa-equivalent log-mel: centre zero-pad, periodic Hann, |rfft|^2, Slaney mel, natural log.

    The STFT is framing (slices of the signal cut into hops, `frames`) and one MatMul with the Hann-windowed
    cos/sin DFT basis, so the ONNX graph has no STFT/complex op that an execution provider may lack. The
    transform runs in float64: a 400-term fp32 dot product loses ~1e-3 in the log of quiet mel bands next to
    loud ones (FFT libraries are more accurate), while fp64 keeps parity with librosa ~1e-7 at ~1 ms per
    window.
    Do not call ``.float()`` on this module: it would round the fp64 basis (``AVPENet`` never does).
    ``AudioFrontend(torch.float32)`` is that trade made on purpose: the graph `avpenet export` publishes
    beside the float64 one, about 2x faster, for the serving config to choose (ensemble/README.md).

    Two entry points, one result. ``windows`` takes level-normalised windows (training, the PyTorch model).
    ``forward`` is the served graph: the clip once (contract.AUDIO rows) and each window's gain. Windows
    overlap by 2 s and a hop is exactly MEL_FRAMES_PER_HOP frames, so frame k of window i is the clip's frame
    i*MEL_FRAMES_PER_HOP + k, computed once for the clip, times the window's gain squared (the power is
    quadratic in the gain and the mel sum linear). Only EDGE_FRAMES reach past a window's ends, where the
    window's own zero padding applies: those few are computed per window.
    """

    MEL_FRAMES_PER_HOP = C.HOP_SAMPLES // C.HOP_LENGTH  # 100
    # frames of a window whose N_FFT span leaves [0, WINDOW_SAMPLES): frame k spans k*HOP_LENGTH -+ 200
    EDGE_FRAMES = tuple(
        k
        for k in range(C.MEL_FRAMES)
        if k * C.HOP_LENGTH - C.N_FFT // 2 < 0 or k * C.HOP_LENGTH + C.N_FFT // 2 > C.WINDOW_SAMPLES
    )

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        from avpenet.features import logmel  # the same basis and filters as the feature reference

        self.compute_dtype = dtype  # float64 but for the fp32-DFT graph (ensemble.export.fp32_dft_frontend)

        re, im = logmel.dft_basis()  # Hann-windowed, (n_freq, N_FFT) each
        n_freq = re.shape[0]
        # fixed, derived from the contract: not trained, not stored in checkpoints
        basis = np.concatenate([re, im]).T  # (N_FFT, 2*n_freq)
        self.register_buffer("dft", torch.tensor(basis, dtype=dtype), persistent=False)
        mel = logmel.mel_filterbank().T  # (n_freq, N_MELS)
        self.register_buffer("mel", torch.tensor(mel, dtype=dtype), persistent=False)
        # (E, N_FFT) sample indices of the edge frames, into a window padded by N_FFT // 2
        edges = np.array(self.EDGE_FRAMES)[:, None] * C.HOP_LENGTH + np.arange(C.N_FFT)[None, :]
        inside = (edges >= C.N_FFT // 2) & (edges < C.WINDOW_SAMPLES + C.N_FFT // 2)
        self.register_buffer("edge_index", torch.tensor(edges, dtype=torch.int64), persistent=False)
        self.register_buffer("edge_inside", torch.tensor(inside, dtype=dtype), persistent=False)
        self.n_freq = n_freq

    @staticmethod
    def frames(signal: torch.Tensor, count: int) -> torch.Tensor:
        """(B, S) -> (B, count, N_FFT): frame k is signal[:, k*HOP_LENGTH : k*HOP_LENGTH + N_FFT].

        Cut from the signal split into hops, as slices and one concatenation: N_FFT = q hops + r samples, so
        frame k is hops k .. k+q-1 and the first r samples of hop k+q. The same frames as a Gather of
        count x N_FFT sample indices, which took 29% of the served frontend graph's time in ONNX Runtime on a
        60-s clip (ensemble/README.md, *Framing without a Gather*). Needs S >= HOP_LENGTH * (count + q)."""
        q, r = divmod(C.N_FFT, C.HOP_LENGTH)
        hops = signal[:, : C.HOP_LENGTH * (count + q)].reshape(signal.shape[0], count + q, C.HOP_LENGTH)
        parts = [hops[:, j : j + count] for j in range(q)] + ([hops[:, q : q + count, :r]] if r else [])
        return torch.cat(parts, dim=2)

    def _mel_power(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., N_FFT) float64 frames -> (..., N_MELS) mel power."""
        spec = torch.matmul(frames, self.dft)  # (..., 2*n_freq)
        power = spec[..., : self.n_freq] ** 2 + spec[..., self.n_freq :] ** 2
        return torch.matmul(power, self.mel)

    @staticmethod
    def _log(mel: torch.Tensor) -> torch.Tensor:
        """(B, 300, N_MELS) mel power -> (B, 1, N_MELS, 300) float32 log-mel."""
        log_mel = torch.log(torch.clamp(mel, min=C.LOG_MEL_FLOOR)).to(torch.float32)
        return log_mel.transpose(1, 2).unsqueeze(1)

    def windows(self, waveform: torch.Tensor) -> torch.Tensor:
        """Normalised windows (B, WINDOW_SAMPLES) -> log_mel (B, 1, N_MELS, MEL_FRAMES)."""
        x = F.pad(waveform, (C.N_FFT // 2, C.N_FFT // 2)).to(self.compute_dtype)  # (B, S + N_FFT), centred
        # the contract keeps the first 300 of 301 frames
        return self._log(self._mel_power(self.frames(x, C.MEL_FRAMES))).to(waveform.dtype)

    def forward(self, audio: torch.Tensor, window_gain: torch.Tensor) -> torch.Tensor:
        """AUDIO rows (R*N, L) + WINDOW_GAIN (R*N, 1) -> log_mel (R*N, 1, N_MELS, MEL_FRAMES), as ``windows``.

        The rows are R requests of N windows each, as Triton's dynamic batcher stacks requests of one shape:
        L = contract.audio_row_samples(N) fixes N (L - HOP_SAMPLES = ceil(2 * HOP_SAMPLES / N))."""
        rows, row_samples = audio.shape[0], audio.shape[1]
        extra = row_samples - C.HOP_SAMPLES  # = ceil(2 s of samples / n)
        n = (C.WINDOW_SAMPLES - C.HOP_SAMPLES + extra - 1) // extra
        pad = C.N_FFT // 2
        clips = F.pad(audio.reshape(rows // n, n * row_samples), (pad, pad)).to(self.compute_dtype)  # (R, S)
        hop = self.MEL_FRAMES_PER_HOP
        index = {"dtype": torch.int64, "device": audio.device}  # the GPU too (device_stage)
        starts = torch.arange(n, **index)[:, None]  # window i starts at clip frame i * hop
        clip_mel = self._mel_power(self.frames(clips, (n - 1) * hop + C.MEL_FRAMES))
        mel = clip_mel[:, starts * hop + torch.arange(C.MEL_FRAMES, **index)[None, :]]
        edge_samples = starts[:, :, None] * C.HOP_SAMPLES + self.edge_index[None]  # (N, E, N_FFT)
        edge_mel = self._mel_power(clips[:, edge_samples] * self.edge_inside)  # the window's own zero padding
        pieces, done = [], 0
        for j, k in enumerate(self.EDGE_FRAMES):
            pieces += ([mel[:, :, done:k]] if k > done else []) + [edge_mel[:, :, j : j + 1]]
            done = k + 1
        mel = torch.cat([*pieces, mel[:, :, done:]], dim=2).reshape(rows, C.MEL_FRAMES, C.N_MELS)
        gain = window_gain.to(self.compute_dtype).reshape(-1, 1, 1)
        return self._log(mel * gain * gain)


# ----------------------------------------------------------------------------------------------------
# 2. audio_encoder: compact ResNet over the log-mel -> 38 audio tokens
# ----------------------------------------------------------------------------------------------------


class BasicBlock1d(nn.Module):
    """ResNet basic block over time (two k=3 convs) with a strided 1x1 projection shortcut when needed."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.short = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class AudioEncoder(nn.Module):
    """log-mel -> a sequence of audio tokens, one per ~80 ms, each summarising all mel bands.

    A 2-D conv stem reads local time-frequency patterns (harmonics, F0 glides, noise bursts) and halves both
    axes; its 64 bands x channels are then the channels of a 1-D ResNet over time (as in TC-ResNet,
    Choi et al. 2019). A full 2-D ResNet at 128x300 cost ~4x the compute and memory traffic here.
    """

    def __init__(self, cfg: AVPENetConfig) -> None:
        super().__init__()
        self.in_norm = nn.BatchNorm1d(C.N_MELS)  # per-mel-band standardisation learned from training data
        c0, w = cfg.audio_stem_channels, cfg.audio_width
        self.stem = nn.Sequential(
            nn.Conv2d(1, c0, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU()
        )  # (B, c0, 64, 150)
        self.mix = nn.Sequential(
            nn.Conv1d(c0 * (C.N_MELS // 2), w, 1, bias=False), nn.BatchNorm1d(w), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[BasicBlock1d(w, w, s) for s in cfg.audio_strides])
        self.proj = nn.Linear(w, cfg.embed_dim)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        # log_mel (B, 1, N_MELS, 300) -> audio_tokens (B, AUDIO_TOKENS, D)
        x = self.in_norm(log_mel.squeeze(1)).unsqueeze(1)  # (B, 1, 128, 300)
        x = self.stem(x)  # (B, c0, 64, 150)
        b, c, f, t = x.shape
        x = self.mix(x.reshape(b, c * f, t))  # (B, W, 150): bands x channels become channels
        x = self.blocks(x)  # (B, W, 38) after two stride-2 blocks
        return self.norm(self.proj(x.transpose(1, 2)))  # (B, 38, D)


# ----------------------------------------------------------------------------------------------------
# 3. visual_encoder: temporal CNN over per-frame landmark/AU features -> 30 visual tokens
# ----------------------------------------------------------------------------------------------------


class TemporalBlock(nn.Module):
    """Residual dilated 1-D conv over frames; masked frames are zeroed before each conv (they add nothing)."""

    def __init__(self, width: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.norm = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x (B, W, T), mask (B, 1, T)
        return x + self.drop(F.gelu(self.norm(self.conv(x * mask))))


class VisualEncoder(nn.Module):
    """Standardise features (statistics fitted on training frames), then a dilated temporal CNN."""

    def __init__(self, cfg: AVPENetConfig) -> None:
        super().__init__()
        fdim = cfg.visual_feature_dim
        # set by training from the valid training frames; identity until then
        self.register_buffer("feature_mean", torch.zeros(fdim))
        self.register_buffer("feature_std", torch.ones(fdim))
        self.inp = nn.Conv1d(fdim + 1, cfg.visual_hidden, 1)  # +1: the mask itself is an input channel
        self.blocks = nn.ModuleList(
            TemporalBlock(cfg.visual_hidden, d, cfg.dropout) for d in cfg.visual_dilations
        )
        self.out = nn.Linear(cfg.visual_hidden, cfg.embed_dim)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, visual_features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        # visual_features (B, T, F), frame_mask (B, T) -> visual_tokens (B, T, D)
        m = (frame_mask > 0.5).to(visual_features.dtype).unsqueeze(-1)  # (B, T, 1)
        x = (visual_features - self.feature_mean) / self.feature_std * m  # invalid frames -> 0
        x = torch.cat([x, m], dim=-1).transpose(1, 2)  # (B, F+1, T)
        mt = m.transpose(1, 2)  # (B, 1, T)
        x = self.inp(x)
        for block in self.blocks:
            x = block(x, mt)
        return self.norm(self.out(x.transpose(1, 2)))  # (B, T, D)


# ----------------------------------------------------------------------------------------------------
# 4. fusion: bidirectional cross-modal attention + self-attention over both sequences, then heads
# ----------------------------------------------------------------------------------------------------


class MaskedAttention(nn.Module):
    """Multi-head attention with an explicit additive key mask (no fused fast path, exports as plain ops).

    A query whose keys are all masked gets a zero output rather than NaN, which is what lets a window with no
    audio (or no face) pass through the cross-attention untouched.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h = n_heads
        self.scale = 1.0 / math.sqrt(dim // n_heads)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.o = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        # x (B, Tq, D) queries, ctx (B, Tk, D) keys/values, key_valid (B, Tk) in {0, 1}
        b, tq, d = x.shape
        tk = ctx.shape[1]
        hs = d // self.h
        q = self.q(x).reshape(b, tq, self.h, hs).transpose(1, 2)  # (B, h, Tq, hs)
        kv = self.kv(ctx).reshape(b, tk, 2, self.h, hs).permute(2, 0, 3, 1, 4)  # (2, B, h, Tk, hs)
        k, v = kv[0], kv[1]
        att = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # (B, h, Tq, Tk)
        att = att + (1.0 - key_valid)[:, None, None, :] * MASK_NEG
        att = self.drop(torch.softmax(att, dim=-1))
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, tq, d)  # (B, Tq, D)
        any_valid = key_valid.amax(dim=1)[:, None, None]  # (B, 1, 1): 0 when every key is masked
        return self.o(y) * any_valid


class FusionLayer(nn.Module):
    """audio<-visual and visual<-audio cross-attention, then self-attention over [audio; visual], then FFN."""

    def __init__(self, cfg: AVPENetConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm_a, self.norm_v, self.norm_s, self.norm_f = (nn.LayerNorm(d) for _ in range(4))
        self.a_from_v = MaskedAttention(d, cfg.n_heads, cfg.dropout)
        self.v_from_a = MaskedAttention(d, cfg.n_heads, cfg.dropout)
        self.self_att = MaskedAttention(d, cfg.n_heads, cfg.dropout)
        self.ffn = nn.Sequential(
            nn.Linear(d, cfg.ffn_mult * d), nn.GELU(), nn.Linear(cfg.ffn_mult * d, d), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor, n_audio: int) -> torch.Tensor:
        # x (B, Ta+Tv, D) = [audio; visual], valid (B, Ta+Tv)
        a, v = x[:, :n_audio], x[:, n_audio:]
        va, vv = valid[:, :n_audio], valid[:, n_audio:]
        na, nv = self.norm_a(a), self.norm_v(v)
        a = a + self.a_from_v(na, nv, vv)  # audio tokens read the face (pre-norm residuals)
        v = v + self.v_from_a(nv, na, va)  # face tokens read the audio
        x = torch.cat([a, v], dim=1)
        s = self.norm_s(x)
        x = x + self.self_att(s, s, valid)
        return x + self.ffn(self.norm_f(x))


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: x (B, T, D), valid (B, T) -> (B, D); zeros when no token is valid."""
    w = valid.unsqueeze(-1)
    return (x * w).sum(dim=1) / torch.clamp(w.sum(dim=1), min=1.0)


def _unknown_age_of_older_runs(state: dict, prefix: str, *args) -> None:
    """A run saved before requests without an age had their own scale served them with the shared one, and
    one saved before the age was inferred served them with the third embedding (``infers_age`` 0)."""
    if prefix + "interval_scale" in state and prefix + "unknown_age_scale" not in state:
        state[prefix + "unknown_age_scale"] = state[prefix + "interval_scale"].clone()
    if prefix + "age.weight" in state and prefix + "infers_age" not in state:
        d = state[prefix + "age.weight"].shape[1]
        state[prefix + "infers_age"] = torch.zeros(1)
        state[prefix + "age_head.weight"] = torch.zeros(1, AGE_CUES * d + 2)
        state[prefix + "age_head.bias"] = torch.zeros(1)


AGE_CUES = 2  # the pooled audio and face tokens the age head reads (plus whether each is present)


def valid_masks(
    audio_tokens: torch.Tensor, frame_mask: torch.Tensor, audio_present: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which audio steps (B, Ta) and frames (B, Tv) the fusion reads: an absent modality, none of its own."""
    a_valid = (audio_present > 0.5).to(audio_tokens.dtype).expand(-1, audio_tokens.shape[1])
    return a_valid, (frame_mask > 0.5).to(audio_tokens.dtype)


def age_cues(
    audio_tokens: torch.Tensor, visual_tokens: torch.Tensor, a_valid: torch.Tensor, v_valid: torch.Tensor
) -> torch.Tensor:
    """What ``Fusion.age_head`` reads: each modality's encoder tokens pooled over its valid steps and
    whether it is present, (B, 2D+2). Encoder outputs, before any age embedding is added."""
    present = torch.stack([a_valid.amax(dim=1), v_valid.amax(dim=1)], dim=1)  # (B, 2)
    return torch.cat([masked_mean(audio_tokens, a_valid), masked_mean(visual_tokens, v_valid), present], -1)


class Fusion(nn.Module):
    """Fuse the two token sequences and produce every served output.

    modality_weights is the gate the fused vector is literally built from: after the attention layers each
    modality is mean-pooled over its valid tokens, a learned scorer gives each pooled summary a logit, a
    softmax over the PRESENT modalities gives (w_audio, w_visual), and the heads read
    ``w_audio * audio_summary + w_visual * visual_summary`` (plus the age embedding). An absent modality gets
    weight 0 exactly; with neither present both weights are 0 (the gateway refuses such a request anyway).
    The served log_variance is calibrated: the buffer ``interval_scale`` (fitted on the validation subjects
    after training so that 90% of clips are covered; 1 while training) is folded into it, so
    interval_90 = score -/+ Z_INTERVAL * exp(log_variance / 2), clipped to 0-10, follows from the outputs
    alone, for one window here and for a whole clip in ``aggregate_windows``. A request without an age group
    (the third embedding, which no training clip carries) has a scale of its own, ``unknown_age_scale``,
    fitted on the same clips sent without their age: its errors are larger than its variance says.
    Once ``infers_age`` is 1 such a request is not scored with that embedding at all but with the age the
    clip itself shows: ``age_head``, a logistic regression on the encoders' pooled tokens fitted after
    training (``avpenet.age_inference``), gives P(adult), and the age vector is the neonate and adult
    embeddings mixed by it. A cry and a face tell a newborn from an adult far better than the untrained
    third embedding did (docs/EVALUATION.md, *No age group*).
    """

    def __init__(self, cfg: AVPENetConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.pos_a = nn.Parameter(torch.zeros(1, C.AUDIO_TOKENS, d))  # learned positions + modality identity
        self.pos_v = nn.Parameter(torch.zeros(1, C.VISUAL_TOKENS, d))
        nn.init.normal_(self.pos_a, std=0.02)
        nn.init.normal_(self.pos_v, std=0.02)
        self.age = nn.Embedding(len(C.AGE_GROUPS), d)  # neonate | adult | unknown conditions every token
        self.layers = nn.ModuleList(FusionLayer(cfg) for _ in range(cfg.n_fusion_layers))
        self.norm = nn.LayerNorm(d)
        self.gate = nn.Linear(d, 1)  # shared scorer: how much each modality's summary should count
        self.trunk = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(cfg.dropout))
        self.score_head = nn.Linear(d, 1)
        self.class_head = nn.Linear(d, len(C.LEVELS))
        self.logvar_head = nn.Linear(d, 1)
        self.register_buffer("interval_scale", torch.ones(1))  # calibrated on validation after training
        self.register_buffer("unknown_age_scale", torch.ones(1))  # the same, for requests without an age
        # P(adult) of a clip without an age, fitted after training; built without drawing from the random
        # stream, so a run of a given seed trains exactly as before the head existed
        self.age_head = nn.utils.skip_init(nn.Linear, AGE_CUES * d + 2, 1)
        nn.init.zeros_(self.age_head.weight)
        nn.init.zeros_(self.age_head.bias)
        self.age_head.requires_grad_(False)  # no loss reaches it: weight decay must not shrink a fitted head
        self.register_buffer("infers_age", torch.zeros(1))  # 1 once age_head is fitted (not while training)
        self._register_load_state_dict_pre_hook(_unknown_age_of_older_runs)

    def predict(
        self,
        audio_tokens: torch.Tensor,  # (B, Ta, D)
        visual_tokens: torch.Tensor,  # (B, Tv, D)
        frame_mask: torch.Tensor,  # (B, Tv)
        audio_present: torch.Tensor,  # (B, 1)
        age_group: torch.Tensor,  # (B, 1) int64
    ) -> dict[str, torch.Tensor]:
        """All outputs plus the training-only tensors (class logits, the raw score before squashing)."""
        ta = audio_tokens.shape[1]
        a_valid, v_valid = valid_masks(audio_tokens, frame_mask, audio_present)  # (B, Ta), (B, Tv)
        age_id = torch.clamp(age_group[:, 0], 0, len(C.AGE_GROUPS) - 1)  # (B,)
        unknown = (age_id == C.UNKNOWN_AGE)[:, None]  # (B, 1)
        age, p_adult = self._age(audio_tokens, visual_tokens, a_valid, v_valid, age_id, unknown)  # (B, D)
        x = torch.cat([audio_tokens + self.pos_a, visual_tokens + self.pos_v], dim=1) + age[:, None, :]
        valid = torch.cat([a_valid, v_valid], dim=1)  # (B, Ta+Tv)
        for layer in self.layers:
            x = layer(x, valid, ta)
        x = self.norm(x)
        pooled = torch.stack(
            [masked_mean(x[:, :ta], a_valid), masked_mean(x[:, ta:], v_valid)], dim=1
        )  # (B,2,D)
        present = torch.stack([a_valid.amax(dim=1), v_valid.amax(dim=1)], dim=1)  # (B, 2)
        logits = self.gate(pooled).squeeze(-1) + (1.0 - present) * MASK_NEG  # (B, 2)
        weights = torch.softmax(logits, dim=-1) * present  # absent modality -> exactly 0
        fused = (weights.unsqueeze(-1) * pooled).sum(dim=1)  # (B, D)
        h = self.trunk(torch.cat([fused, age], dim=-1))  # (B, D)
        raw = self.score_head(h)  # (B, 1)
        score = C.SCORE_MAX * torch.sigmoid(raw)  # (B, 1) in [0, 10]
        log_variance = torch.clamp(self.logvar_head(h), -8.0, 6.0)  # (B, 1); clamp keeps exp() sane
        scale = torch.where(unknown, self.unknown_age_scale, self.interval_scale)  # (B, 1)
        log_variance = log_variance + 2.0 * torch.log(scale)  # calibrated spread
        half = Z_INTERVAL * torch.exp(0.5 * log_variance)
        interval = torch.clamp(torch.cat([score - half, score + half], dim=-1), C.SCORE_MIN, C.SCORE_MAX)
        class_logits = self.class_head(h)  # (B, 3)
        return {
            C.SCORE.name: score,
            C.CLASS_PROBS.name: torch.softmax(class_logits, dim=-1),
            C.LOG_VARIANCE.name: log_variance,
            C.INTERVAL.name: interval,
            C.MODALITY_WEIGHTS.name: weights,
            C.ADULT_PROBABILITY.name: p_adult,
            "class_logits": class_logits,
        }

    def _age(
        self, audio_tokens, visual_tokens, a_valid, v_valid, age_id, unknown
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each window's age embedding (B, D): its own group's, or for one without a group, once
        ``infers_age``, the neonate and adult embeddings mixed by the age head's P(adult); and that P(adult)
        (B, 1) for every window, C.NOT_READ without a fitted head (what the response reports as read)."""
        named = self.age(age_id)  # (B, D)
        p_adult = torch.sigmoid(self.age_head(age_cues(audio_tokens, visual_tokens, a_valid, v_valid)))
        neonate, adult = (self.age.weight[C.AGE_GROUPS.index(group)] for group in C.LABELLED_AGE_GROUPS)
        inferred = neonate + p_adult * (adult - neonate)  # (B, D)
        reads = self.infers_age > 0.5
        age = torch.where(unknown & reads, inferred, named)
        return age, torch.where(reads, p_adult, torch.full_like(p_adult, C.NOT_READ))

    def forward(self, audio_tokens, visual_tokens, frame_mask, audio_present, age_group):
        # -> score (B,1), class_probs (B,3), log_variance (B,1), interval_90 (B,2), modality_weights (B,2),
        #    adult_probability (B,1)
        out = self.predict(audio_tokens, visual_tokens, frame_mask, audio_present, age_group)
        return tuple(out[spec.name] for spec in C.FUSION.outputs)


# ----------------------------------------------------------------------------------------------------
# The whole model
# ----------------------------------------------------------------------------------------------------


class AVPENet(nn.Module):
    """The four parts, named exactly as the Triton models they are exported to (contract.PARTS)."""

    def __init__(self, cfg: AVPENetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or AVPENetConfig()
        self.audio_frontend = AudioFrontend()
        self.audio_encoder = AudioEncoder(self.cfg)
        self.visual_encoder = VisualEncoder(self.cfg)
        self.fusion = Fusion(self.cfg)

    def predict(
        self, waveform, visual_features, frame_mask, audio_present, age_group
    ) -> dict[str, torch.Tensor]:
        """The ensemble: every contract output plus ``class_logits`` (used by training)."""
        audio_tokens, visual_tokens = self.tokens(waveform, visual_features, frame_mask, audio_present)
        return self.fusion.predict(audio_tokens, visual_tokens, frame_mask, audio_present, age_group)

    def tokens(
        self, waveform, visual_features, frame_mask, audio_present
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoders' token sequences, (B, 38, D) and (B, 30, D): what the fusion reads."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or bool(audio_present.any()):
            audio_tokens = self.audio_encoder(self.audio_frontend.windows(waveform))
        else:  # no window has audio: the tokens are fully masked in the fusion, skip the costly encoder
            audio_tokens = waveform.new_zeros(waveform.shape[0], C.AUDIO_TOKENS, self.cfg.embed_dim)
        return audio_tokens, self.visual_encoder(visual_features, frame_mask)

    def forward(
        self, waveform, visual_features, frame_mask, audio_present, age_group
    ) -> dict[str, torch.Tensor]:
        """Ensemble inputs (contract names) -> dict of the ensemble outputs keyed by contract names."""
        out = self.predict(waveform, visual_features, frame_mask, audio_present, age_group)
        return {spec.name: out[spec.name] for spec in C.ENSEMBLE.outputs}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def part(self, name: str) -> nn.Module:
        """The submodule exported as Triton model ``name`` (one of contract.PARTS)."""
        assert name in {spec.name for spec in C.PARTS}, f"unknown part {name!r}"
        return getattr(self, name)


def example_inputs(
    spec: C.ModelSpec | tuple[C.TensorSpec, ...], batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random but valid inputs for a part, the ensemble or the PyTorch model (C.MODEL_INPUTS)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in spec.inputs if isinstance(spec, C.ModelSpec) else spec:
        shape = C.batch_shape(t, batch)
        if t.name == C.AGE_GROUP.name:
            out.append(torch.randint(0, len(C.AGE_GROUPS), shape, generator=g, dtype=torch.int64))
        elif t.name in (C.FRAME_MASK.name, C.AUDIO_PRESENT.name):
            out.append(torch.ones(shape))
        elif t.name in (C.WAVEFORM.name, C.AUDIO.name):
            out.append(0.1 * torch.randn(shape, generator=g))
        elif t.name == C.WINDOW_GAIN.name:
            out.append(0.5 + torch.rand(shape, generator=g))
        elif t.name == C.LOG_MEL.name:
            out.append(torch.randn(shape, generator=g) - 8.0)
        else:
            out.append(torch.randn(shape, generator=g))
    return tuple(out)


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------


CHECKPOINT_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"  # `avpenet evaluate --json RUN/metrics.json`: the figures export records
SINGLE_MODALITY_RUNS = ("audio_only", "visual_only")  # subfolders: single-modality runs on the run's split
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"  # the committed reference run


@dataclass
class Checkpoint:
    """What a run directory holds about the model (config.json's "model" section + model.pt)."""

    model: AVPENet
    config: dict = field(default_factory=dict)  # the whole config.json (model, training, data, metrics)


def save_model(model: AVPENet, run_dir: Path, extra: dict | None = None) -> None:
    """Write model.pt (state dict, fp32) and config.json (model config + whatever the caller adds)."""
    import json
    import tempfile

    from avpenet.durable import replace_files

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # torch.save names the archive inside after the file ("model/"; a buffer's is "archive/"), so the same
    # weights keep the same bytes and checkpoint_sha256 in the export manifests
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".save-") as scratch:
        torch.save(model.state_dict(), Path(scratch) / CHECKPOINT_FILE)
        weights = (Path(scratch) / CHECKPOINT_FILE).read_bytes()
    config = {"model": model.cfg.to_dict(), "params": model.num_params(), **(extra or {})}
    # both whole, and swapped in together: a full disk never leaves new weights beside the old config
    replace_files({
        run_dir / CHECKPOINT_FILE: weights,
        run_dir / CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True) + "\n",
    })  # fmt: skip


def load_model(run_dir: Path | str | None = None) -> Checkpoint:
    """Rebuild the model of a run directory (default: the committed reference run), in eval mode."""
    import json

    run_dir = Path(run_dir) if run_dir is not None else REFERENCE_DIR
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    model = AVPENet(AVPENetConfig(**config["model"]))
    state = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return Checkpoint(model=model.eval(), config=config)
