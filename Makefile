# Thin shortcuts to the scripts that do the work; CI runs .ci/run, not make.
.PHONY: test demo lint test-arm64 test-docker deb test-deb test-deb-boot test-py313

# ruff, mypy and pytest in .venv (created on first use). Args: make test ARGS="-k config"
test:
	scripts/test $(ARGS)

# edge-agentd --demo in the foreground; Ctrl-C stops it.
demo:
	scripts/demo $(ARGS)

# ruff and mypy only, as scripts/test runs them.
lint:
	bash -c 'source scripts/bootstrap.sh && ruff check edge_agent tools tests benchmarks examples && mypy'

# The whole suite under Python 3.13, in a cached Debian trixie amd64 root (as root): scripts/test-py313.
test-py313:
	scripts/test-py313 $(ARGS)

# The daemon on emulated arm64 (debootstrap + qemu-user, as root): docs/arm64.md. ARGS=bookworm
# for Debian 12 (default: trixie, today's Raspberry Pi OS).
test-arm64:
	scripts/test-arm64 $(ARGS)

# Dockerfile.arm64 built and run under qemu, no registry (as root; after test-arm64): docs/arm64.md.
test-docker:
	scripts/test-docker

# The .deb (as root): dist/edge-agent_<version>+deb13_arm64.deb (trixie arm64); make deb
# ARGS="bookworm amd64" for another suite and architecture.
# What it installs and how: docs/deployment.md, "Install from a .deb".
deb:
	scripts/build-deb $(ARGS)

# The four .debs (trixie and bookworm, arm64 and amd64) built, linted, installed, upgraded and
# purged, each in a root of its suite and architecture, then the docs' systemd blocks on a booted
# trixie amd64 root (as root); ARGS=trixie-amd64 (or another SUITE-ARCH, or a .deb) for one.
test-deb:
	scripts/test-deb $(ARGS)

# Only the docs' systemd blocks, on a booted trixie amd64 root (systemd-nspawn --boot), with
# dist/edge-agent_*+deb13_amd64.deb: docs/deployment.md, "Test".
test-deb-boot:
	scripts/test-deb-boot $(ARGS)
