"""Shared feature pipeline: decoding, face tracking and per-window model inputs.

Training, evaluation, the gateway and the tests all call the same functions (see docs/ARCHITECTURE.md,
"Feature API"). Submodules are imported lazily by callers so `import avpenet.features.audio` never loads
mediapipe.
"""
