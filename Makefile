# `make run` = install + dvc repro + serve the champion; `make test` = the test suite.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
# The browser tests/service/test_web.py drives; `make browser` installs it.
CHROMIUM ?= /usr/bin/chromium
# The proxy of `make serve-proxy` and tests/service/test_proxy.py; `make proxy-deps` installs it.
NGINX ?= /usr/sbin/nginx
NGINX_PACKAGE ?= nginx
# The PostgreSQL server tests/service/test_feedback_store.py starts privately; `make feedback-deps` installs it.
PG_PACKAGE ?= postgresql
BIN := $(VENV)/bin
# Stages run `python -m pipeline.…`: the venv's python must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install fonts browser proxy-deps feedback-deps teams-deps remote tracking-server move-store promote rollback history sweep repro serve serve-proxy run ui test test-teams audit bench params clean

install: $(VENV)/.installed

# requirements.txt is the lock (every pin); then the project itself, editable: `import digits` etc. from anywhere.
$(VENV)/.installed: requirements.txt requirements-serve.txt pyproject.toml
	@echo "== install: $(VENV) with every pin of requirements.txt, then this project (editable); about 2 min"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -r requirements.txt \
		| grep -v -e '^Requirement already satisfied' -e '^  Using cached'
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	@echo "== install: done"
	touch $@

params: install
	$(BIN)/python -m pipeline.params

# PROFILE=quick (the default: dense, cnn and the quick champion recipe, ~10 min on 2 cores) or full (every
# recipe incl. the long trainings and the ensemble, hours): conf/experiment/full.yaml. Progress and
# data/run.log: pipeline/run.py.
PROFILE ?= quick
repro: install fonts
	$(BIN)/python -m pipeline.run --profile $(PROFILE)

serve: install
	$(BIN)/python -m serve.check || exit 1
	@echo "== serving the champion on http://$(HOST):$(PORT)/ (the web page; the API: http://$(HOST):$(PORT)/docs)"
	@echo "== compare the runs in the MLflow UI: make ui (http://$(HOST):$${UI_PORT:-5000}); Ctrl-C stops the server"
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c serve/gunicorn.conf.py serve.gunicorn_app:app

# nginx on HOST:PORT in front of two gunicorn backends on 127.0.0.1:PORT+1 and PORT+2 (serve/proxy.py,
# deploy/nginx/digits.conf.template): whole requests buffered, slow clients timed out, RATE_LIMIT per client.
serve-proxy: install proxy-deps
	$(BIN)/python -m serve.check || exit 1
	@echo "== the API behind nginx on http://$(HOST):$(PORT)/ (RATE_LIMIT $${RATE_LIMIT:-10}/s per client, burst $${RATE_BURST:-20}); Ctrl-C stops all"
	NGINX=$(NGINX) HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m serve.proxy

run: repro serve

ui: install
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} \
		--host $(HOST) --port $${UI_PORT:-5000}

# Handwriting-style fonts: training draws "not a digit" letters in some (conf/negatives/default.yaml), the
# robustness suite measures with others (testkit/field.py). Debian's packages, installed when missing.
FONTS_TRAIN := fonts-comic-neue fonts-bwht fonts-dancingscript fonts-humor-sans fonts-kaushanscript
FONTS_SUITE := fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-rufscript
fonts:
	@missing=$$(for p in $(FONTS_TRAIN) $(FONTS_SUITE); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi; \
	if [ "$$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make fonts: no apt-get or no root/sudo: install these Debian font packages (or the same files): $$missing"; \
		exit 1; fi; \
	echo "make fonts: installing $$missing"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null \
		|| { $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }

# $(call apt_install,NAME,TEST,PACKAGE,FOR): Debian's PACKAGE, installed only when the shell test TEST
# fails, for FOR. Without apt-get or the rights to use it, or when apt-get fails, say so and go on: what
# needs the package then fails with the same advice.
define apt_install
	@if $(2); then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi; \
	if [ "$$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make $(1): no apt-get or no root/sudo: install $(3) yourself ($(4) need it)"; exit 0; fi; \
	echo "make $(1): installing $(3) with apt-get for $(4)"; \
	{ $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(3); } \
		|| echo "make $(1): could not install $(3): $(4) will fail"
endef

# The web page tests drive Debian's chromium (a browser is never downloaded).
browser:
	$(call apt_install,browser,[ -x $(CHROMIUM) ],chromium,the web page tests)

# Debian's nginx, for `make serve-proxy` and the proxy tests; installed only when missing. The package runs
# nothing of ours: serve/proxy.py starts a private instance (its own config, loopback, no port 80). On a
# machine with an init system the package also enables Debian's own nginx service: `systemctl disable --now
# nginx` if that is not wanted. Without apt-get or the rights to use it, say so: the proxy tests then fail
# with the same advice.
proxy-deps:
	$(call apt_install,proxy-deps,[ -x $(NGINX) ],$(NGINX_PACKAGE),make serve-proxy and the proxy tests)

# Debian's PostgreSQL server, for the feedback store's tests (testkit/postgres.py starts a private cluster
# on loopback; the server itself uses SQLite unless FEEDBACK_DB_URL names a database). Installed only when
# missing. The package also sets up and starts Debian's own cluster where an init system runs:
# `systemctl disable --now postgresql` if that is not wanted. Without apt-get or root, say so: those
# tests then fail with the same advice.
feedback-deps:
	$(call apt_install,feedback-deps,ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1,$(PG_PACKAGE),the feedback store's PostgreSQL tests)

# Two pytest processes, whole test files each (pytest-xdist): most of the three pipeline runs is one core's
# worth of process start-up, imports and data generation, which the other process's work fills in
# (docs/benchmarks.md: 13.9 min against 20.8 serial on 2 cores). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: install fonts browser proxy-deps feedback-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not teams"

# Debian's openssh-server (the DVC remote's tests start a private sshd on loopback; nothing of Debian's own
# sshd is used) and PostgreSQL (the tracking server's); kubectl (`kubectl kustomize`) must be on PATH.
teams-deps: feedback-deps
	$(call apt_install,teams-deps,[ -x /usr/sbin/sshd ],openssh-server,the DVC remote's tests)
	@command -v kubectl >/dev/null || echo "make teams-deps: kubectl is not on PATH: the kustomize checks will fail (https://kubernetes.io/docs/tasks/tools/)"

# The team's MLflow tracking server (docs/teams.md): PostgreSQL in .tracking/postgres (made on the first run),
# artifacts in .tracking/artifacts, in the foreground; Ctrl-C stops both.
#   make tracking-server TRACKING="--host 0.0.0.0 --allowed-hosts mlflow.team.lan:5000 --auth"
#   make move-store TO=http://mlflow.team.lan:5000      this clone's mlruns/ to it (again: only what is new)
TRACKING ?=
tracking-server: install feedback-deps
	$(BIN)/python -m ops.tracking_server $(TRACKING)
move-store: install
	@test -n "$(TO)" || { echo 'make move-store TO=http://HOST:5000'; exit 2; }
	$(BIN)/python -m ops.move_store --from sqlite:///mlruns/mlflow.db --to $(TO)

# champion is moved by the promote stage's gate (docs/teams.md), or by a person:
#   make promote VERSION=7 WHY="..." [MODEL=digits]   checked (sha256, self-test), not judged; recorded who/when/why
#   make rollback WHY="..." [MODEL=digits]            champion back to the one before it
#   make history [MODEL=digits]                       every move
# VERSION must be given on make's command line (not taken from the environment); WHY reaches the command
# through the environment, so quotes and $ in it stay text.
MODEL ?= digits
promote: install
	@test "$(origin VERSION)" = "command line" -a -n "$$WHY" || { echo 'make promote VERSION=N WHY="why" [MODEL=digits]'; exit 2; }
	$(BIN)/python -m ops.promote "$(VERSION)" --name "$(MODEL)" --why "$$WHY"
rollback: install
	@test -n "$$WHY" || { echo 'make rollback WHY="why" [MODEL=digits]'; exit 2; }
	$(BIN)/python -m ops.promote --rollback --name "$(MODEL)" --why "$$WHY"
history: install
	$(BIN)/python -m ops.promote --history --name "$(MODEL)"

# A hyperparameter sweep on Ray Tune (docs/teams.md, conf/sweep/default.yaml): on RAY_ADDRESS's cluster, else on
# a private Ray head on 127.0.0.1 with this machine's CPUs, stopped after; the best -> conf/experiment/sweep_<name>.yaml.
#   make sweep SWEEP="--variant cnn --trials 16 --name cnn_lr"
SWEEP ?=
sweep: install
	$(BIN)/python -m ops.sweep $(SWEEP)

# The team's DVC remote (docs/teams.md): the URL once per team (committed in .dvc/config), then each member's
# login in .dvc/config.local (not in git):
#   make remote REMOTE_URL=ssh://HOST/PATH          make remote REMOTE_USER=ana REMOTE_KEYFILE=~/.ssh/id_ed25519 [REMOTE_PORT=22]
remote: install
	$(if $(REMOTE_URL),$(BIN)/dvc remote add --default --force team $(REMOTE_URL))
	$(if $(REMOTE_USER),$(BIN)/dvc remote modify --local team user $(REMOTE_USER))
	$(if $(REMOTE_KEYFILE),$(BIN)/dvc remote modify --local team keyfile $(REMOTE_KEYFILE))
	$(if $(REMOTE_PORT),$(BIN)/dvc remote modify --local team port $(REMOTE_PORT))
	$(BIN)/dvc remote list

# The team tests (docs/teams.md): real PostgreSQL, MLflow server, sshd and Ray head on loopback, each
# started by the tests and stopped after. CI runs them after `make test`.
test-teams: install fonts teams-deps
	$(BIN)/python -m pytest -q -m teams tests/teams

# pip-audit over .venv: fails on a known vulnerability, warns (exit 0) when the service cannot answer
audit: install
	$(BIN)/python .ci/audit.py

bench: install
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf data models reports champion mlruns/mlflow.db mlruns/artifacts .dvc/cache
