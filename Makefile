# Thin shortcuts to the scripts that do the work; CI runs .ci/run, not make.
.PHONY: test demo lint test-arm64 test-docker deb test-deb

# ruff, mypy and pytest in .venv (created on first use). Args: make test ARGS="-k config"
test:
	scripts/test $(ARGS)

# edge-agentd --demo in the foreground; Ctrl-C stops it.
demo:
	scripts/demo $(ARGS)

# ruff and mypy only, as scripts/test runs them.
lint:
	bash -c 'source scripts/bootstrap.sh && ruff check edge_agent tools tests benchmarks examples && mypy'

# The daemon on emulated arm64 (debootstrap + qemu-user, as root): docs/arm64.md.
test-arm64:
	scripts/test-arm64

# Dockerfile.arm64 built and run under qemu, no registry (as root; after test-arm64): docs/arm64.md.
test-docker:
	scripts/test-docker

# The .deb (as root): dist/edge-agent_<version>_arm64.deb; make deb ARGS=amd64 for amd64.
# What it installs and how: docs/deployment.md, "Install from a .deb".
deb:
	scripts/build-deb $(ARGS)

# The arm64 and amd64 .debs built, linted, installed, upgraded and purged, each in a Bookworm
# root of its architecture (as root); ARGS=amd64 (or arm64, or a .deb) for one.
test-deb:
	scripts/test-deb $(ARGS)
