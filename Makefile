# bitsec -- `make test` and `make demo` work on a fresh machine: they install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := /opt/swift/usr/bin:$(PATH)

ROOT      := $(abspath .)
SWIFT     ?= swift
PYTHON    ?= python3
VENV      := $(ROOT)/.venv
VPY       := $(VENV)/bin/python
BUILD     := $(ROOT)/.build/release
LIBDIR    := $(ROOT)/build/lib
LIB       := $(LIBDIR)/libbitsec.so.1
VERSION   := $(shell sed -n 's/^#define BITSEC_VERSION_STRING "\(.*\)"/\1/p' include/bitsec.h)
ABI       := $(shell sed -n 's/^#define BITSEC_ABI_VERSION \([0-9]*\)/\1/p' include/bitsec.h)
PREFIX    ?= /usr/local
# python3-dev: Python.h, for the Python package's optional compiled guard steps (bitsec._speedups).
APT_PKGS  := libssl-dev libhiredis-dev redis-server pkg-config openssl python3-dev
FIXTURE   := $(PYTHON) $(ROOT)/tools/redis_fixture.py run --
# Recursive (=): pkg-config is only installed by the apt step, so evaluate at use.
SWIFT_HDR_FLAGS = -parse-as-library -swift-version 6 -enable-upcoming-feature InternalImportsByDefault \
	-module-name Bitsec -I $(BUILD)/Modules -I Sources/COpenSSL -I Sources/CHiredis \
	$(addprefix -Xcc ,$(shell pkg-config --cflags-only-I hiredis openssl 2>/dev/null))

.PHONY: all deps apt venv browser-deps build lib speedups header header-check check-generated check-symbols mypy check-self-contained test test-swift test-c test-python alerts-deps test-alerts \
	demo install bench clean serve sanitize sanitize-address sanitize-thread sanitize-speedups \
	fuzz fuzz-build fuzz-smoke dist test-wheel

all: build

## ---- dependencies (idempotent) --------------------------------------------------------
deps: apt venv

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

VENV_STAMP := $(VENV)/.stamp-$(shell cat requirements-dev.txt bindings/python/pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
venv: $(VENV_STAMP)
$(VENV_STAMP): requirements-dev.txt bindings/python/pyproject.toml
	@[ -x $(VPY) ] || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps -e bindings/python
	rm -f $(VENV)/.stamp-*; touch $@

## ---- build -----------------------------------------------------------------------------
build: apt
	$(SWIFT) build -c release
	@$(MAKE) --no-print-directory lib

# The loader looks for the SONAME (libbitsec.so.1); build/lib holds it and the link-time name.
lib:
	@mkdir -p $(LIBDIR)
	@cp -f $(BUILD)/libbitsec.so $(LIB).tmp && mv -f $(LIB).tmp $(LIB)
	@ln -sf libbitsec.so.1 $(LIBDIR)/libbitsec.so
	@mkdir -p bindings/python/src/bitsec/_lib && cp -f $(LIB) bindings/python/src/bitsec/_lib/libbitsec.so.1
	@$(MAKE) --no-print-directory speedups

# The Python package's compiled guard steps (bindings/python/src/bitsec/_speedups.c, CPython's
# limited API: one file for Python 3.10 and later), next to the sources the venv imports; the
# wheel builds its own through setup.py. docs/packaging.md says why it exists.
SPEEDUPS := bindings/python/src/bitsec/_speedups.abi3.so
PY_INCLUDE = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
speedups: $(SPEEDUPS)
$(SPEEDUPS): bindings/python/src/bitsec/_speedups.c
	$(CC) -O2 -g -std=c11 -Wall -Wextra -Werror -shared -fPIC -I$(PY_INCLUDE) $< -o $@.tmp && mv -f $@.tmp $@

# The public header: the Swift compiler prints the @c declarations, gen_header.py cleans them.
header: build
	swiftc -typecheck $(SWIFT_HDR_FLAGS) Sources/Bitsec/*.swift -emit-clang-header-path $(ROOT)/build/bitsec-swift.h
	$(PYTHON) tools/gen_header.py build/bitsec-swift.h include/bitsec_api.h
	$(PYTHON) tools/gen_abi.py

header-check: build
	@swiftc -typecheck $(SWIFT_HDR_FLAGS) Sources/Bitsec/*.swift -emit-clang-header-path $(ROOT)/build/bitsec-swift-check.h 2>/dev/null
	@$(PYTHON) tools/gen_header.py build/bitsec-swift-check.h build/bitsec_api.check.h
	@diff -u include/bitsec_api.h build/bitsec_api.check.h || { echo "include/bitsec_api.h is stale: run 'make header' and commit it"; exit 1; }
	@echo "header-check: include/bitsec_api.h matches Sources/Bitsec"

# Every generated file matches its source: include/bitsec_api.h (header-check), the generated
# sections of include/bitsec.h and bindings/python/src/bitsec/_abi.py (tools/gen_abi.py, from
# Sources/Bitsec/ABIConstants.swift, BitsecCore's Version.swift and include/bitsec_api.h).
check-generated: header-check
	@$(PYTHON) tools/gen_abi.py --check
	@echo "check-generated: include/bitsec.h and bindings/python/src/bitsec/_abi.py match their sources"

# The Python package type-checks under mypy --strict.
mypy: deps
	cd bindings/python && $(VPY) -m mypy --strict src/bitsec

# The exported symbols may only grow within SONAME libbitsec.so.1 (include/bitsec.symbols).
check-symbols: build
	@bash tools/check_symbols.sh $(LIB) include/bitsec.symbols

# A clone tests itself: no tracked file may refer to a path outside the repository.
check-self-contained:
	@$(PYTHON) tools/check_self_contained.py

## ---- tests -----------------------------------------------------------------------------
# After the normal suites, the hardening runs: the Swift suites again under
# ASan+LSan and TSan (`sanitize`, docs/sanitizers.md) and every fuzz target for
# FUZZ_SMOKE_SECONDS (`fuzz-smoke`, docs/fuzzing.md). `make test SANITIZE=0` leaves them out
# for a quick local run; CI (.ci/run) runs them.
# `docs` (the manual, about 10 s after the build) fails on a Doxygen warning or a dead link between guides.
# Each stage runs in turn, timed; the times are printed at the end (build/test-times.txt).
SANITIZE ?= 1
TEST_STAGES = check-self-contained build check-generated check-symbols mypy docs test-swift test-c test-alerts test-python test-wheel \
	$(if $(filter 1,$(SANITIZE)),sanitize fuzz-smoke)
test: deps
	@mkdir -p build; : > build/test-times.txt; all0=$$(date +%s); \
	for stage in $(TEST_STAGES); do \
	  t0=$$(date +%s); \
	  $(MAKE) --no-print-directory $$stage || { echo "make test: stage $$stage failed after $$(( $$(date +%s) - t0 )) s"; exit 1; }; \
	  printf '%-22s %5d s\n' "$$stage" "$$(( $$(date +%s) - t0 ))" >> build/test-times.txt; \
	done; \
	printf '%-22s %5d s\n' "total" "$$(( $$(date +%s) - all0 ))" >> build/test-times.txt
	@echo "make test: time per stage"; sed 's/^/  /' build/test-times.txt
	@count() { sed -n "s/.*Test run with \([0-9]*\) tests\{0,1\} .*passed.*/\1/p" $$1 | tail -1; }; \
	sw=$$(count build/swift-test.log); \
	c=$$(sed -n 's/^c tests: \([0-9]*\) passed.*/\1/p' build/c-test.log | tail -1); \
	py=$$(sed -n 's/^\([0-9]*\) passed.*/\1/p' build/python-test.log | tail -1); \
	pure=$$(sed -n 's/^\([0-9]*\) passed.*/\1/p' build/python-pure-test.log | tail -1); \
	if [ "$(SANITIZE)" = 1 ]; then asan=$$(count build/asan-test.log); tsan=$$(count build/tsan-test.log); \
	  spsan=$$(sed -n 's/^\([0-9]*\) passed.*/\1/p' build/speedups-san.log | tail -1); \
	  san=", swift+asan $$asan, swift+tsan $$tsan, python+asan+ubsan (bitsec._speedups) $$spsan"; \
	else asan=0; tsan=0; spsan=0; san=" (sanitizer runs skipped: SANITIZE=0)"; fi; \
	echo "make test: swift $$sw, c $$c, python $$py, python without bitsec._speedups $$pure$$san"; \
	if [ "$(SANITIZE)" = 1 ]; then fz=$$(grep -c ' ok$$' build/fuzz/summary.txt || true); \
	  echo "fuzz smoke: $$fz targets ran $(FUZZ_SMOKE_SECONDS) s each from their seed corpora, no crash, leak or timeout"; fi; \
	echo "$$(( sw + c + py + pure + asan + tsan + spsan )) passed, 0 failed"

# Swift suites (core and ABI), with a real redis-server from the shared fixture.
test-swift: build
	$(FIXTURE) $(SWIFT) test -c release --disable-testable-imports 2>&1 | tee build/swift-test.log
	@grep -Eq "Test run with [1-9][0-9]* tests? .*passed" build/swift-test.log || { echo "swift test ran no test"; exit 1; }

# The header compiles as C11 and C++17 with gcc and clang at -Wall -Wextra -Werror, links
# and runs; the installed library, header and bitsec.pc build the C example.
test-c: build
	@bash tests/c/run.sh 2>&1 | tee build/c-test.log

# A real headless browser for the reference service's browser tests (tests/test_browser_*.py):
# Debian's chromium and chromium-driver, without recommended packages. Idempotent.
BROWSER_PKGS := chromium chromium-driver
browser-deps:
	@missing=""; for p in $(BROWSER_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test-python: deps build browser-deps alerts-deps
	cd bindings/python && BITSEC_LIBRARY=$(LIB) $(VPY) -m pytest -q -p no:cacheprovider tests 2>&1 | tee $(ROOT)/build/python-test.log
	@echo "test-python: the guard's suites again without the compiled steps (BITSEC_SPEEDUPS=0)"
	cd bindings/python && BITSEC_SPEEDUPS=0 BITSEC_LIBRARY=$(LIB) $(VPY) -m pytest -q -p no:cacheprovider \
		tests/test_speedups.py::test_the_compiled_steps_are_loaded_unless_turned_off \
		tests/test_fastapi_guard.py tests/test_fastapi_guard_cookies.py \
		tests/test_fastapi_guard_routes.py tests/test_guard_check.py 2>&1 | tee $(ROOT)/build/python-pure-test.log

# The distribution (docs/packaging.md): an sdist (Python sources, no library) and a platform
# wheel with libbitsec.so.1, repaired by auditwheel: it bundles hiredis into bitsec.libs/,
# takes the manylinux tag the glibc symbol versions allow, and leaves OpenSSL (libssl.so.3,
# libcrypto.so.3) to the system. Both land in dist/.
dist: deps build
	@rm -rf dist build/wheel bindings/python/build
	cd bindings/python && $(VPY) -m build --no-isolation --sdist -o $(ROOT)/dist . >/dev/null
	cd bindings/python && $(VPY) -m build --no-isolation --wheel -o $(ROOT)/build/wheel . >/dev/null
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/auditwheel repair --only-plat --exclude libssl.so.3 --exclude libcrypto.so.3 \
		-w dist build/wheel/bitsec-*.whl 2>&1 | grep -E "^Fixed-up|tags:" || true
	@rm -rf bindings/python/build
	@ls dist/bitsec-*-manylinux_*.whl >/dev/null && echo "dist: $$(cd dist && ls)"

# The wheel installed into a fresh venv outside the repository (tests/wheel/run.sh): ldd
# resolves the bundled libraries inside it, then a runtime, a token and a FastAPI request.
test-wheel: dist
	@bash tests/wheel/run.sh 2>&1 | tee build/wheel-test.log

# Alerting rules (deploy/prometheus): promtool from Debian's prometheus package, installed once
# without recommends. Debian enables and may start the Prometheus daemon on install; only its
# promtool is wanted here, so the service is stopped and disabled (where systemd or init
# scripts run at all) and no daemon is left running.
alerts-deps:
	@if ! dpkg -s prometheus >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  if [ -d /run/systemd/system ]; then $$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; \
	  else $$SUDO service prometheus stop >/dev/null 2>&1 || true; $$SUDO systemctl disable prometheus >/dev/null 2>&1 || true; fi; \
	fi
	@! pgrep -x prometheus >/dev/null || { echo "alerts-deps: a prometheus daemon is running (stop it: systemctl disable --now prometheus)"; exit 1; }

# promtool's own checks and unit tests of the rules (the live test that feeds the reference
# service's scraped metrics to promtool is in the Python suite).
test-alerts: alerts-deps
	promtool check rules deploy/prometheus/bitsec-rules.yml
	cd deploy/prometheus && promtool test rules bitsec-rules.test.yml

## ---- sanitizers ----------------------------------------------------------------------
# The whole Swift test suite (core, ABI, hostile-input table) under AddressSanitizer (with
# LeakSanitizer) and under ThreadSanitizer, each in its own debug build directory, with the
# Redis fixture. Fails on any sanitizer report, even when every test passed. Part of
# `make test` (unless SANITIZE=0). docs/sanitizers.md.
# --disable-xctest: every suite is swift-testing; the empty XCTest pass only adds XCTest's
# own exit-time leaks. -DBITSEC_TSAN_MUTEX: a pthread Mutex TSan can see (Support/Sync.swift).
# Redis under the sanitizers: the standalone server only (BITSEC_TEST_REDIS_MODES=standalone:
# the fixture starts no cluster, TLS server or sentinels, and the mode-parametrised suites
# run their Redis cases against the standalone server). The Redis Cluster, TLS and Sentinel
# variants and the fault suites below run once, in test-swift; they are excluded here by name.
SAN_REDIS_MODES := standalone
SAN_SKIP_SUITES := RedisClusterTests RedisTLSTests
SAN_SUPP    := $(ROOT)/tools/sanitizers
SAN_TEST     = BITSEC_TEST_REDIS_MODES=$(SAN_REDIS_MODES) $(FIXTURE) $(SWIFT) test --disable-xctest --sanitize=$(1) \
	--scratch-path $(ROOT)/.build-$(2) $(addprefix --skip ,$(SAN_SKIP_SUITES)) $(3)
# SAN_CHECK runs even when `swift test` failed: on a sanitizer report it prints the first three
# reports in full as its last lines (a CI log is often read from its tail), then fails.
SAN_REPORTS  = awk '/WARNING: ThreadSanitizer|ERROR: (Address|Leak)Sanitizer|runtime error:/{p=1;n++} p&&n<=3{print} /^SUMMARY: /{p=0}' $(1)
SAN_CHECK    = if grep -qE "ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:" $(1); then \
	  echo "$(2): sanitizer report(s) in $(1); the first three:"; $(call SAN_REPORTS,$(1)); exit 1; fi; \
	grep -Eq "Test run with [1-9][0-9]* tests? .*passed" $(1) || { echo "$(2): the suite did not pass"; exit 1; }

sanitize: sanitize-address sanitize-thread sanitize-speedups
	@echo "make sanitize: ASan+LSan and TSan clean"

# The Python package's compiled guard steps (bitsec._speedups) built with ASan and UBSan into
# a copy of the package, and their tests run against that build (CPython itself is not
# instrumented: leaks are not checked, only the module's memory accesses and undefined behaviour).
SPEEDUPS_SAN := $(ROOT)/build/speedups-san
sanitize-speedups: deps build
	@rm -rf $(SPEEDUPS_SAN) && mkdir -p $(SPEEDUPS_SAN) && cp -r bindings/python/src/bitsec $(SPEEDUPS_SAN)/
	@rm -f $(SPEEDUPS_SAN)/bitsec/_speedups*.so
	$(CC) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -std=c11 \
		-Wall -Wextra -Werror -shared -fPIC -I$(PY_INCLUDE) bindings/python/src/bitsec/_speedups.c \
		-o $(SPEEDUPS_SAN)/bitsec/_speedups.abi3.so
	cd bindings/python && PYTHONPATH=$(SPEEDUPS_SAN) BITSEC_LIBRARY=$(LIB) ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
		LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
		$(VPY) -c 'import bitsec, bitsec._accel as a, sys; assert bitsec.__file__.startswith("$(SPEEDUPS_SAN)") and a.active(), bitsec.__file__' \
		&& PYTHONPATH=$(SPEEDUPS_SAN) BITSEC_LIBRARY=$(LIB) ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
		LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
		$(VPY) -m pytest -q -p no:cacheprovider tests/test_speedups.py tests/test_fastapi_guard.py 2>&1 | tee $(ROOT)/build/speedups-san.log
	@echo "sanitize-speedups: bitsec._speedups clean under ASan and UBSan"

sanitize-address: apt
	@mkdir -p build
	rc=0; ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(SAN_SUPP)/lsan.supp:print_suppressions=1 \
	$(call SAN_TEST,address,asan) 2>&1 | tee build/asan-test.log || rc=$$?; \
	$(call SAN_CHECK,build/asan-test.log,ASan); [ $$rc -eq 0 ] || { echo "ASan: swift test exited with $$rc"; exit $$rc; }

sanitize-thread: apt
	@mkdir -p build
	rc=0; TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1 \
	$(call SAN_TEST,thread,tsan,-Xswiftc -DBITSEC_TSAN_MUTEX) 2>&1 | tee build/tsan-test.log || rc=$$?; \
	$(call SAN_CHECK,build/tsan-test.log,TSan); [ $$rc -eq 0 ] || { echo "TSan: swift test exited with $$rc"; exit $$rc; }

## ---- fuzzing -------------------------------------------------------------------------
# libFuzzer targets over the C ABI (docs/fuzzing.md): one executable, bitsec-fuzz, built with
# -sanitize=fuzzer,address (optimised) into .build-fuzz; it only exists with BITSEC_FUZZ=1.
# `make fuzz` runs every target FUZZ_SECONDS (default 600) one after the other;
# `make fuzz-smoke` FUZZ_SMOKE_SECONDS each (CI); both fail on any crash, leak or timeout.
# FUZZ_RUNS=N (optional, exported to fuzz/run.sh) also stops each target after N executions.
FUZZ_TARGETS       ?= config jwks verify_token verify_token_jose policy check_permission totp decrypt_field audit_emit csrf password_phc session
FUZZ_SECONDS       ?= 600
FUZZ_SMOKE_SECONDS ?= 5

fuzz-build: apt
	BITSEC_FUZZ=1 $(SWIFT) build -c release --scratch-path $(ROOT)/.build-fuzz --product bitsec-fuzz \
		-Xswiftc -sanitize=fuzzer,address

fuzz: fuzz-build
	@bash fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	@bash fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

## ---- install (C users) -----------------------------------------------------------------
install: build
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libbitsec.so.$(VERSION)
	ln -sf libbitsec.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libbitsec.so.$(ABI)
	ln -sf libbitsec.so.$(ABI) $(DESTDIR)$(PREFIX)/lib/libbitsec.so
	install -m 0644 include/bitsec.h include/bitsec_api.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' tools/bitsec.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/bitsec.pc

## ---- demo ------------------------------------------------------------------------------
demo: deps build
	@bash examples/demo.sh

# The reference service for manual use, in the foreground (Ctrl-C stops it): demo users,
# 127.0.0.1 on a free port (PORT=8000 to choose), data in build/fastapi_service/, embedded
# state (REDIS_PORT=6379 to keep it in that redis-server on 127.0.0.1); FRESH=1 wipes the
# service's files in build/fastapi_service/ first (a database of an older schema is refused).
# WORKERS=4 runs 4 worker processes (uvicorn --workers; SERVER=gunicorn: gunicorn with
# uvicorn-worker and --preload) sharing their state through the host store (or REDIS_PORT).
serve: deps build
	@BITSEC_LIBRARY=$(LIB) $(VPY) examples/fastapi_service/serve.py \
		$(if $(PORT),--port $(PORT)) $(if $(REDIS_PORT),--redis-port $(REDIS_PORT)) $(if $(FRESH),--fresh) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(SERVER),--server $(SERVER))

# wrk drives the HTTP benchmark (bench/http_bench.py): installed here if missing, and the
# benchmark fails when it is still missing (no fallback to another load generator).
bench: deps build
	@dpkg -s wrk >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; } \
	  || { case "$(BENCH)" in ""|*http*) echo "wrk is not installed and could not be installed: the HTTP benchmark needs it" >&2; exit 1;; esac; }
	@bash bench/run.sh

clean:
	rm -rf build dist .build .build-asan .build-tsan .build-fuzz bindings/python/src/bitsec/_lib


## ---- the reference manual ----------------------------------------------------------------
# `make docs`: build/docs/index.html links the guides of docs/ rendered to HTML
# (tools/build_docs.py), the Python API (pdoc, from requirements-dev.txt) and the C API
# (Doxygen from include/*.h, installed from apt on first use, only for this target). Fails on
# any Doxygen warning and on a link between guides to a missing page. pdoc imports the
# package, so the library is built first.
DOCS_OUT := $(ROOT)/build/docs
# The package sets __all__, so pdoc renders its submodules only when they are named.
PDOC_MODULES := bitsec bitsec.runtime bitsec.errors bitsec.tokens bitsec.permissions bitsec.ratelimit \
	bitsec.totp bitsec.fields bitsec.audit bitsec.sessions bitsec.csrf bitsec.passwords bitsec.keys bitsec.alerting \
	bitsec.fastapi bitsec.prometheus bitsec.sqlalchemy
.PHONY: docs
docs: deps build
	@command -v doxygen >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; echo "installing: doxygen"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq doxygen >/dev/null; }
	@rm -rf $(DOCS_OUT) && mkdir -p $(DOCS_OUT)/c
	@BITSEC_VERSION=$(VERSION) BITSEC_DOCS_C=$(DOCS_OUT)/c doxygen docs/Doxyfile 2> $(DOCS_OUT)/doxygen-warnings.txt
	@if [ -s $(DOCS_OUT)/doxygen-warnings.txt ]; then cat $(DOCS_OUT)/doxygen-warnings.txt; \
	  echo "make docs: Doxygen warnings (above)"; exit 1; fi
	@cd bindings/python && BITSEC_LIBRARY=$(LIB) $(VPY) -m pdoc --docformat restructuredtext \
	  --footer-text "bitsec $(VERSION)" -o $(DOCS_OUT)/python $(PDOC_MODULES)
	@$(VPY) tools/build_docs.py $(DOCS_OUT)
