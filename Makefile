# Two entry points for a fresh machine (see README):
#   make demo   install, convert an example notebook and run its pipeline locally
#   make test   install with test extras and run the test suite (default profile;
#               KALE_TEST_PROFILE=exhaustive make test runs everything, as CI does)
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-test demo test bench bench-quick

install:
	$(PIP) install -q -e .

install-test:
	$(PIP) install -q -e '.[test]'

demo: install
	$(MAKE) -C examples PYTHON=$(PYTHON) candies.py
	cd examples && $(PYTHON) candies.py --local

test: install-test
	$(PYTHON) -m pytest -n 2 -q

bench: install-test
	$(PYTHON) -m benchmarks

bench-quick: install-test
	$(PYTHON) -m benchmarks --quick
