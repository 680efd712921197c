"""API keys: constant-time check, key-file revocation without restart, bearer parsing."""

from __future__ import annotations

import pytest

from preprocess_service.auth import ApiKeys, bearer_token
from preprocess_service.errors import (
    Unauthenticated,
    status_of,
)


class TestAuth:
    def test_constant_time_check_accepts_only_known_keys(self):
        keys = ApiKeys(["alpha", "beta"])
        assert keys.check("alpha") and keys.check("beta")
        assert not keys.check("alph") and not keys.check("") and not keys.check(None)
        with pytest.raises(Unauthenticated):
            keys.require(None)
        with pytest.raises(Unauthenticated):
            keys.require("gamma")
        assert status_of(Unauthenticated("x")) == (401, "UNAUTHENTICATED")

    def test_key_file_revocation_without_restart(self, tmp_path, monkeypatch):
        import preprocess_service.auth as auth

        monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
        path = tmp_path / "keys"
        path.write_text("# ward 3\nk1\nk2  # nurse station\n")
        keys = ApiKeys(key_file=path)
        assert keys.check("k1") and keys.check("k2")
        path.write_text("k2\n")
        import os

        os.utime(path, (1, 1))  # a different mtime even within the filesystem's resolution
        assert not keys.check("k1") and keys.check("k2")

    @pytest.mark.parametrize("emptied", ["deleted", "empty", "comments only"])
    def test_a_key_file_emptied_later_refuses_everyone(self, tmp_path, monkeypatch, emptied):
        """It used to switch authentication off: no keys read as 'no auth configured'."""
        import os

        import preprocess_service.auth as auth

        monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
        path = tmp_path / "keys"
        path.write_text("k1\n")
        keys = ApiKeys(key_file=path)
        keys.require("k1")
        if emptied == "deleted":
            path.unlink()
        else:
            path.write_text("" if emptied == "empty" else "# rotated out\n")
            os.utime(path, (1, 1))
        for token in (None, "k1", "anything"):
            with pytest.raises(Unauthenticated):
                keys.require(token)

    def test_a_byte_order_mark_and_crlf_are_not_part_of_a_key(self, tmp_path):
        path = tmp_path / "keys"
        path.write_bytes("key-alpha\r\nkey-beta\r\n".encode("utf-8-sig"))  # as Notepad saves it
        keys = ApiKeys(key_file=path)
        assert keys.check("key-alpha") and keys.check("key-beta")

    def test_bearer_parsing(self):
        assert bearer_token("Bearer abc") == "abc"
        assert bearer_token("bearer  abc ") == "abc"
        assert bearer_token("Basic abc") is None and bearer_token(None) is None
