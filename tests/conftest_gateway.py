"""Alias of `support.gateway`, kept only for test files written before the tests moved into folders.

New tests import `support.gateway`; the session fixtures (`triton_server`, `gateway_stack`) live in
tests/conftest.py and need no `pytest_plugins`.
"""

from support.gateway import API_KEY, face_track, mp4_bytes, wav_bytes

__all__ = ["API_KEY", "face_track", "mp4_bytes", "wav_bytes"]
