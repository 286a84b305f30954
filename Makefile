# dora-analyze - see README.md. `make` builds bin/dora-analyze and build/libdora.a;
# `make check` runs every test; `make deps` installs what the build and tests need.

CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := hdf5 jansson lapacke libpcre2-8 libzip
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Wpedantic -Werror
# OpenBLAS: the OpenMP build where it is installed (Debian's libopenblas-openmp-dev,
# beside the system's default). Our worker threads split the work and call BLAS at
# once; the default pthread build starts a pool when it is loaded whose threads spin
# on sched_yield for ~0.1 s (up to 14% of the CPU samples of a 0.19 s `analyze` on
# 2 cores), and the serial build is not thread-safe (Debian builds it without
# USE_LOCKING: concurrent dgemm calls returned wrong results). The OpenMP build
# locks, and starts no thread until a call runs in parallel (README, Performance).
BLAS_DIR := /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)/openblas-openmp
ifneq ($(wildcard $(BLAS_DIR)/pkgconfig/openblas.pc),)
BLAS_PC := PKG_CONFIG_PATH=$(BLAS_DIR)/pkgconfig
# DT_RPATH, not RUNPATH: it also serves the libblas.so.3 and liblapack.so.3
# that liblapacke loads, which must come from the same build
BLAS_RPATH := -Wl,--disable-new-dtags,-rpath,$(BLAS_DIR)
endif
DEPFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(shell $(BLAS_PC) pkg-config --cflags openblas 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) \
           $(shell $(BLAS_PC) pkg-config --libs openblas 2>/dev/null) $(BLAS_RPATH) -lpthread -lm
# The program links HDF5's static archive where libhdf5-dev ships it (Debian does):
# the shared libhdf5 pulls in 36 libraries (curl, TLS, Kerberos, LDAP, for its S3
# driver, which this tool never uses), whose loading and relocation took 12% of the
# CPU samples of a warm 2 GiB FT analysis (perf; 39 M cycles in the dynamic loader
# against 17 M). HDF5_STATIC=0 links the shared library. The library (libdora.a,
# dora.pc) and the unit tests keep -lhdf5.
HDF5_LIBDIR := $(patsubst -L%,%,$(filter -L%,$(shell pkg-config --libs-only-L hdf5 2>/dev/null)))
HDF5_A  := $(if $(filter 0,$(HDF5_STATIC)),,$(firstword $(wildcard $(addsuffix /libhdf5.a,$(HDF5_LIBDIR)))))
BIN_LDLIBS := $(if $(HDF5_A),$(HDF5_A) -lsz -lz -ldl $(filter-out -lhdf5,$(LDLIBS)),$(LDLIBS))
# OpenBLAS (with its LAPACK) and LAPACKE the same way, from the OpenMP build's archive
# and liblapacke-dev's: loading and relocating libopenblas, liblapack and liblapacke
# took 9-12 ms of every run's start (a program linked with them against one without,
# reaching main() in 0.025-0.032 s against 0.015-0.019 s), 6% of a warm 2 GiB FT
# analysis, though an FT analysis never calls them. BLAS_STATIC=0 links them shared.
# The archive's LAPACK is Fortran: it needs libgfortran.so (Debian's gfortran), else shared.
GFORTRAN_SO := $(wildcard $(shell $(CC) -print-file-name=libgfortran.so 2>/dev/null))
BLAS_A    := $(if $(filter 0,$(BLAS_STATIC)),,$(if $(BLAS_PC),$(if $(GFORTRAN_SO),$(wildcard $(BLAS_DIR)/libopenblas.a))))
LAPACKE_A := $(if $(BLAS_A),$(firstword $(wildcard /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)/liblapacke.a)))
ifneq ($(LAPACKE_A),)
BIN_LDLIBS := $(patsubst -llapacke,$(LAPACKE_A),$(patsubst -lopenblas,$(BLAS_A) -lgfortran -lgomp,$(filter-out $(BLAS_RPATH),$(BIN_LDLIBS))))
endif
ALL_CFLAGS = $(WARN) $(CFLAGS) -Iinclude -Isrc $(DEPFLAGS) -MMD -MP \
             -DDORA_DEFAULT_PLOTS_DIR='"$(CURDIR)/plots"' 

# `make MPI=1`: built with mpicc, `batch` spreads its units over the ranks of
# mpirun (use a separate tree: make MPI=1 BUILD=build-mpi BIN=build-mpi/bin/dora-analyze)
ifeq ($(MPI),1)
CC      := mpicc
ALL_CFLAGS += -DDORA_MPI
endif

BUILD   ?= build
# src/LAYER/*.c, one folder per layer (docs/design.md); every layer but the
# command layer (src/cli/) is library code
CLI_SRC := $(sort $(wildcard src/cli/*.c))
LIB_SRC := $(filter-out $(CLI_SRC),$(sort $(wildcard src/*/*.c)))
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
CLI_OBJ := $(CLI_SRC:src/%.c=$(BUILD)/obj/%.o)
LIB     := $(BUILD)/libdora.a
BIN     ?= bin/dora-analyze
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps check unit sanitize bench demo clean
all: $(BIN) $(LIB)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(BIN_LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/unit.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

deps:
	@sh tools/deps.sh

unit: $(UNIT_BIN)

check: all unit
	@BIN=$(BIN) BUILD=$(BUILD) PYTHON=$(PYTHON) sh tests/run_all.sh

# The same tests, built with AddressSanitizer and UndefinedBehaviorSanitizer in a separate tree.
sanitize:
	$(MAKE) BUILD=build-san BIN=build-san/bin/dora-analyze \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" check

demo:
	@sh tools/demo.sh

bench: all $(BUILD)/bench_probe
	@PYTHON=$(PYTHON) BIN=$(BIN) PROBE=$(BUILD)/bench_probe sh tests/bench/bench.sh

# the probe is the practical limit: built for this CPU, nothing but the pass
$(BUILD)/bench_probe: tests/bench/bench_probe.c
	@mkdir -p $(dir $@)
	$(CC) -O3 -march=native -pthread -o $@ $<

clean:
	rm -rf build build-san build-fuzz build-mpi bin

# Installing (GNU conventions): `make install PREFIX=/usr DESTDIR=/tmp/stage`.
# The binary finds its gnuplot templates in ../share/dora-analyze/plots beside
# itself, so an installed tree can be moved as a whole.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
COMPDIR    ?= $(DATADIR)/bash-completion/completions
VERSION    := $(shell sed -n 's/^#define DORA_VERSION "\(.*\)"/\1/p' include/dora/version.h)
MAN1       := $(sort $(wildcard docs/man/*.1))
HEADERS    := $(sort $(wildcard include/dora/*.h))
.PHONY: install uninstall dist
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/dora \
	  $(DESTDIR)$(DATADIR)/dora-analyze/plots $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(COMPDIR)
	install -m 755 $(BIN) $(DESTDIR)$(BINDIR)/dora-analyze
	install -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/libdora.a
	install -m 644 $(HEADERS) $(DESTDIR)$(INCLUDEDIR)/dora/
	# pkg-config: a static library, so Libs carries the libraries it needs
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	  -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' -e 's|@VERSION@|$(VERSION)|' \
	  -e 's|@CFLAGS@|$(DEPFLAGS)|' -e 's|@LIBS@|$(LDLIBS)|' tools/dora.pc.in >$(DESTDIR)$(LIBDIR)/pkgconfig/dora.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/dora.pc
	install -m 644 plots/*.gp $(DESTDIR)$(DATADIR)/dora-analyze/plots/
	install -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 tools/completion/dora-analyze.bash $(DESTDIR)$(COMPDIR)/dora-analyze

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dora-analyze $(DESTDIR)$(LIBDIR)/libdora.a \
	  $(DESTDIR)$(LIBDIR)/pkgconfig/dora.pc $(DESTDIR)$(COMPDIR)/dora-analyze \
	  $(addprefix $(DESTDIR)$(INCLUDEDIR)/dora/,$(notdir $(HEADERS))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) \
	  $(DESTDIR)$(DATADIR)/dora-analyze/plots/*.gp
	-rmdir $(DESTDIR)$(INCLUDEDIR)/dora $(DESTDIR)$(DATADIR)/dora-analyze/plots \
	  $(DESTDIR)$(DATADIR)/dora-analyze 2>/dev/null

# a versioned source tarball of the committed tree (HEAD), which builds and tests on its own
dist:
	@mkdir -p $(BUILD)
	git archive --format=tar.gz --prefix=dora-analyze-$(VERSION)/ -o $(BUILD)/dora-analyze-$(VERSION).tar.gz HEAD
	@echo $(BUILD)/dora-analyze-$(VERSION).tar.gz

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

# libFuzzer (clang): each parser's target runs FUZZ_SECONDS from its seed corpus
# in tests/fuzz/corpus/NAME; new inputs go to build-fuzz/corpus/NAME.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc $(DEPFLAGS)
FUZZ_TARGETS := safetensors pickle index adapter_config torchzip manifest torchzip_pickle torchzip_gen
.PHONY: fuzz
fuzz: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t tests/fuzz/corpus/$$t; \
	  echo "== fuzz_$$t ($(FUZZ_SECONDS) s)"; \
	  build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    build-fuzz/corpus/$$t tests/fuzz/corpus/$$t >build-fuzz/fuzz_$$t.log 2>&1; rc=$$?; \
	  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added)" build-fuzz/fuzz_$$t.log; \
	  if [ $$rc -ne 0 ]; then tail -40 build-fuzz/fuzz_$$t.log; exit 1; fi; \
	done

build-fuzz/fuzz_safetensors: tests/fuzz/fuzz_safetensors.c src/formats/safetensors.c src/core/tensor.c src/core/error.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ $(LDLIBS)

build-fuzz/fuzz_pickle: tests/fuzz/fuzz_pickle.c $(wildcard src/formats/pickle*.c) src/core/tensor.c src/core/error.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ $(LDLIBS)

# the file-based targets link the whole library (built again with the fuzzer's flags)
FUZZ_LIB_SRC := $(filter-out src/cli/%.c,$(wildcard src/*/*.c))
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_files.h $(FUZZ_LIB_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Itests/fuzz -o $@ $< $(FUZZ_LIB_SRC) $(LDLIBS)

# valid torch archives around a fuzzed pickle (torchzip_pickle) or around one written by a
# program the fuzz bytes choose (torchzip_gen): tests/fuzz/fuzz_zip.h writes the zip, so the
# mutations reach the pickle and the views instead of the CRC check
build-fuzz/fuzz_torchzip_pickle build-fuzz/fuzz_torchzip_gen: build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c \
    tests/fuzz/fuzz_files.h tests/fuzz/fuzz_zip.h $(FUZZ_LIB_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Itests/fuzz -o $@ $< $(FUZZ_LIB_SRC) $(LDLIBS)
