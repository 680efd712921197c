"""The texts that say which `make` target installs the real-media Debian packages name the one that does.

docs/DATA.md and avpenet.realmedia said `make setup`, which installs neither: only `make realmedia-packages`
(run by `make test` and `make realmedia`) does."""

from __future__ import annotations

import re
from pathlib import Path

from avpenet import realmedia

ROOT = Path(__file__).resolve().parents[2]


def test_the_target_named_for_the_packages_installs_them() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert f"REALMEDIA_PKGS := {' '.join(realmedia.DEBIAN_PACKAGES)}\n" in makefile
    recipe = re.search(r"^realmedia-packages:\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "$(call apt_install,$(REALMEDIA_PKGS))" in recipe.group(1)
    installer = re.search(r"^define apt_install\n(.*?)^endef", makefile, re.M | re.S)
    assert installer and "apt-get install -y -qq $(1)" in installer.group(1)
    setup = re.search(r"^setup:(.*)\n", makefile, re.M).group(1)
    assert "realmedia-packages" not in setup  # so a text saying `make setup` installs them is wrong
    data = (ROOT / "docs" / "DATA.md").read_text()
    for text in (realmedia._missing(), data):
        assert "make realmedia-packages" in text
    assert "`make setup` installs the two Debian packages" not in data
    assert "make setup does" not in realmedia._missing()
