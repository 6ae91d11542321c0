# hpml: the two commands are `make demo` and `make test` (`make test-fast` for the day-to-day loop);
# all install what is missing first.
# Everything lives in .venv; the Horovod wheel (6-7 min to build on 2 cores) is cached outside
# the repository, keyed by the TensorFlow it was built against, so reinstalls take seconds.

SHELL       := /bin/bash
PYTHON      ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check
TF_REQ      := $(shell sed -n 's/^ *"cpu": "\(tensorflow-cpu==[0-9.]*\)",/\1/p' setup.py)
HVD_REQ     := $(shell sed -n 's/^HOROVOD = "\(.*\)"/\1/p' setup.py)
WHEEL_CACHE ?= $(HOME)/.cache/hpml/wheels/$(subst ==,-,$(TF_REQ))
STAMP       := $(VENV)/.installed
MPI_ENV     := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint bench clean system-deps horovod-wheel check-horovod container-check

install: $(STAMP)

$(STAMP): setup.py Makefile
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "setuptools>=69,<76" wheel
	$(PIP) install -q "$(TF_REQ)" "numpy>=1.26,<2"
	@$(MAKE) --no-print-directory horovod-wheel
	HOROVOD_WITH_TENSORFLOW=1 $(PIP) install -q --find-links "$(WHEEL_CACHE)" -e ".[train,dev]"
	@$(MAKE) --no-print-directory check-horovod
	@touch $(STAMP)
	@echo "hpml installed in $(VENV) (activate: source $(VENV)/bin/activate)"

# Open MPI from Debian (with PMIx, as on the cluster); Python builds of MPI are not used.
system-deps:
	@if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: Open MPI is missing. As root run: apt-get install -y openmpi-bin libopenmpi-dev" >&2; exit 1; \
	  fi; \
	  echo "installing Open MPI (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    openmpi-bin libopenmpi-dev >/dev/null; \
	fi

# Horovod must see TensorFlow while it compiles: no build isolation.
horovod-wheel:
	@if ls "$(WHEEL_CACHE)"/horovod-*.whl >/dev/null 2>&1; then \
	  echo "using cached Horovod wheel from $(WHEEL_CACHE)"; \
	else \
	  echo "building $(HVD_REQ) against $(TF_REQ) (about 7 minutes on 2 cores, once)"; \
	  mkdir -p "$(WHEEL_CACHE)" && \
	  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
	  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j2 \
	  $(PIP) wheel -q --no-cache-dir --no-build-isolation --no-deps -w "$(WHEEL_CACHE).tmp" "$(HVD_REQ)" && \
	  mv "$(WHEEL_CACHE).tmp"/horovod-*.whl "$(WHEEL_CACHE)/" && rmdir "$(WHEEL_CACHE).tmp"; \
	fi

# Proof that the build works: two MPI ranks initialise Horovod and agree on the size.
check-horovod:
	$(MPI_ENV) mpirun -np 2 $(PY) -c "import horovod.tensorflow.keras as hvd; hvd.init(); \
	assert hvd.size() == 2 and hvd.mpi_built(), 'bad horovod build'; print(f'horovod ok: rank {hvd.rank()}/{hvd.size()}')"

demo: install
	$(VENV)/bin/hpml demo

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The day-to-day loop: unit tests and the pipeline tests not marked slow (<= 5 min on 2 cores).
test-fast: install
	$(VENV)/bin/pytest tests/unit tests/pipeline -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check hpml preprocess tests
	$(VENV)/bin/ruff format --check hpml preprocess tests

# Builds containers/hpml-cpu.def the way `apptainer build` does (debootstrap + chroot, as root;
# no Apptainer needed), runs its %test, then trains the demo inside it on 2 MPI ranks.
# Root and caches live outside the repository; see containers/README.md.
container-check:
	PYTHON=$(PYTHON) bash containers/check.sh containers/hpml-cpu.def

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
