# sbx: sandboxed CI executor.
#
#   make              build sbx and the plugins into build/
#   make check        install missing build dependencies (as root), build, run every test
#   make demo         install missing dependencies (as root), build, run a GitLab-shaped job
#   make bench        run the benchmarks and write docs/benchmarks.md
#   make install      install under $(DESTDIR)$(PREFIX)
#   make SANITIZE=address,undefined check   the same suite under ASan and UBSan

VERSION := 0.1.0

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
DESTDIR ?=
PKGCONFIGDIR ?= $(DATADIR)/pkgconfig
# systemd's own answer for /usr (/lib/systemd/system on Debian 12, /usr/lib/systemd/system on
# Fedora); systemd also reads units from /usr/local/lib/systemd/system.
SYSTEMDUNITDIR ?= $(or $(if $(filter /usr,$(PREFIX)),$(shell $(PKG_CONFIG) \
	--variable=systemdsystemunitdir systemd 2>/dev/null)),$(PREFIX)/lib/systemd/system)
BASHCOMPLETIONDIR ?= $(DATADIR)/bash-completion/completions

CC ?= cc
PKG_CONFIG ?= pkg-config
BUILD ?= build
SANITIZE ?=

WARNINGS := -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
	-Wpointer-arith -Wcast-align -Wwrite-strings -Wundef -Wvla -Wno-unused-parameter \
	-Wimplicit-fallthrough -Wnull-dereference
CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -fPIC -fvisibility=hidden $(WARNINGS) -D_GNU_SOURCE \
	-Iplugin/include -Iplugin/common \
	-DSBX_VERSION='"$(VERSION)"' -DSBX_SYSCONFDIR='"$(SYSCONFDIR)"' \
	-DSBX_PLUGIN_DIR='"$(LIBDIR)/sbx"'
ifneq ($(SANITIZE),)
override CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
override LDFLAGS += -fsanitize=$(SANITIZE)
endif
ifeq ($(WERROR),1)
override CFLAGS += -Werror
endif

pkg_cflags = $(shell $(PKG_CONFIG) --cflags $(1) 2>/dev/null)
pkg_libs = $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null)

COMMON_PKGS := json-c yaml-0.1
LOCAL_PKGS := $(COMMON_PKGS) libseccomp
K8S_PKGS := $(COMMON_PKGS) libcurl openssl
# libcurl is loaded with dlopen() on first use (plugin/agent-sandbox/k8s/curl_api.h): its
# headers are needed to compile, its library is not linked.
K8S_LINK_PKGS := $(filter-out libcurl,$(K8S_PKGS))
CHECK_PKGS := check

COMMON_SRC := $(wildcard plugin/common/*.c)
LOCAL_SRC := $(wildcard plugin/local/*.c)
K8S_SRC := $(wildcard plugin/agent-sandbox/*.c plugin/agent-sandbox/k8s/*.c)
SHIM_SRC := $(wildcard shim/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
LOCAL_OBJ := $(call obj,$(LOCAL_SRC))
K8S_OBJ := $(call obj,$(K8S_SRC))
SHIM_OBJ := $(call obj,$(SHIM_SRC))

SBX := $(BUILD)/sbx
LOCAL_PLUGIN := $(BUILD)/sbx-local.so
K8S_PLUGIN := $(if $(K8S_SRC),$(BUILD)/sbx-agent-sandbox.so)
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all deps check check-unit unit-tests demo bench install uninstall clean valgrind-unit

all: $(SBX) $(LOCAL_PLUGIN) $(K8S_PLUGIN)

# Dependencies of every object: the public header and the shared internal headers.
HEADERS := $(wildcard plugin/include/sbx/*.h plugin/common/*.h plugin/local/*.h \
	plugin/agent-sandbox/*.h plugin/agent-sandbox/k8s/*.h shim/*.h tests/unit/*.h)

$(BUILD)/obj/plugin/common/%.o: plugin/common/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(call pkg_cflags,$(COMMON_PKGS)) -c -o $@ $<

$(BUILD)/obj/plugin/local/%.o: plugin/local/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(call pkg_cflags,$(LOCAL_PKGS)) -c -o $@ $<

$(BUILD)/obj/plugin/agent-sandbox/%.o: plugin/agent-sandbox/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(call pkg_cflags,$(K8S_PKGS)) -c -o $@ $<

$(BUILD)/obj/shim/%.o: shim/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(call pkg_cflags,$(COMMON_PKGS)) -c -o $@ $<

$(BUILD)/obj/tests/%.o: tests/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iplugin/local -Iplugin/agent-sandbox -Ishim \
		$(call pkg_cflags,$(LOCAL_PKGS) $(CHECK_PKGS)) -c -o $@ $<

$(BUILD)/libsbxcommon.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libsbxlocal.a: $(LOCAL_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libsbxk8s.a: $(K8S_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The local plugin links no network or TLS library: only json-c, libyaml and libseccomp.
$(LOCAL_PLUGIN): $(LOCAL_OBJ) $(BUILD)/libsbxcommon.a
	$(CC) -shared -Wl,-z,defs -Wl,--as-needed -o $@ $(LOCAL_OBJ) $(BUILD)/libsbxcommon.a \
		$(LDFLAGS) $(call pkg_libs,$(LOCAL_PKGS)) -lpthread

$(BUILD)/sbx-agent-sandbox.so: $(K8S_OBJ) $(BUILD)/libsbxcommon.a
	$(CC) -shared -Wl,-z,defs -Wl,--as-needed -o $@ $(K8S_OBJ) $(BUILD)/libsbxcommon.a \
		$(LDFLAGS) $(call pkg_libs,$(K8S_LINK_PKGS)) -ldl -lpthread

$(SBX): $(SHIM_OBJ) $(BUILD)/libsbxcommon.a
	$(CC) -o $@ $(SHIM_OBJ) $(BUILD)/libsbxcommon.a $(LDFLAGS) \
		$(call pkg_libs,$(COMMON_PKGS)) -ldl

# Each unit test links the shared code, the local backend's modules and Check.
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libsbxlocal.a $(BUILD)/libsbxcommon.a \
		$(if $(K8S_SRC),$(BUILD)/libsbxk8s.a)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $< $(BUILD)/libsbxlocal.a $(if $(K8S_SRC),$(BUILD)/libsbxk8s.a) \
		$(BUILD)/libsbxcommon.a $(LDFLAGS) \
		$(call pkg_libs,$(LOCAL_PKGS) $(if $(K8S_SRC),$(K8S_LINK_PKGS)) $(CHECK_PKGS)) \
		-lpthread -ldl

# Stand-in plugins for the shim's tests. Each is named sbx-local.so in its own directory, so
# --plugin-dir or $$SBX_PLUGIN_DIR selects it.
TEST_PLUGINS := $(BUILD)/test-plugins/fake/sbx-local.so $(BUILD)/test-plugins/bad-abi/sbx-local.so \
	$(BUILD)/test-plugins/no-entry/sbx-local.so

$(BUILD)/test-plugins/fake/sbx-local.so: tests/plugins/fake_plugin.c $(HEADERS)
$(BUILD)/test-plugins/bad-abi/sbx-local.so: tests/plugins/bad_abi_plugin.c $(HEADERS)
$(BUILD)/test-plugins/no-entry/sbx-local.so: tests/plugins/no_entry_plugin.c $(HEADERS)
$(TEST_PLUGINS):
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -Wl,-z,defs -o $@ $(filter %.c,$^) $(LDFLAGS)

# test_abi loads the real local plugin.
$(BUILD)/tests/test_abi: $(LOCAL_PLUGIN)

deps:
	@packaging/install-build-deps.sh

# The whole suite, then again under ASan and UBSan, then the unit tests under valgrind.
# CHECK_SANITIZE=0 or CHECK_VALGRIND=0 skip those passes while developing.
CHECK_SANITIZE ?= 1
CHECK_VALGRIND ?= 1
SANITIZE_BUILD := $(BUILD)/sanitize

check: deps
	@$(MAKE) --no-print-directory all unit-tests
	@tests/run-tests.sh $(BUILD)
ifeq ($(CHECK_SANITIZE),1)
	@echo "== the suite again under AddressSanitizer and UndefinedBehaviorSanitizer"
	@$(MAKE) --no-print-directory BUILD=$(SANITIZE_BUILD) SANITIZE=address,undefined \
		all unit-tests
	@ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		tests/run-tests.sh $(SANITIZE_BUILD)
endif
ifeq ($(CHECK_VALGRIND),1)
	@echo "== the unit tests under valgrind"
	@tests/run-tests.sh --unit-only --valgrind $(BUILD)
endif

# Small hosts of the plugin ABI that the integration tests drive (they link only libdl).
TEST_TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(wildcard tests/tools/*.c))

$(BUILD)/tests/tools/%: tests/tools/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -ldl

# The Kubernetes client's test driver links the client, not only libdl.
$(BUILD)/tests/tools/k8s_client_tool: tests/tools/k8s_client_tool.c $(BUILD)/libsbxk8s.a \
		$(BUILD)/libsbxcommon.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iplugin/agent-sandbox $(call pkg_cflags,$(K8S_PKGS)) -o $@ $< \
		$(BUILD)/libsbxk8s.a $(BUILD)/libsbxcommon.a $(LDFLAGS) \
		$(call pkg_libs,$(K8S_LINK_PKGS)) -ldl -lpthread

# Fuzz targets, built with a main that replays their corpus (tests/fuzz/corpus/<name>).
FUZZ_REPLAYS := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/fuzz/%,$(FUZZ_SRC))

$(BUILD)/tests/fuzz/%: tests/fuzz/%.c tests/fuzz/replay.c $(BUILD)/libsbxk8s.a \
		$(BUILD)/libsbxcommon.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iplugin/agent-sandbox $(call pkg_cflags,$(K8S_PKGS)) -o $@ $< \
		tests/fuzz/replay.c $(BUILD)/libsbxk8s.a $(BUILD)/libsbxcommon.a $(LDFLAGS) \
		$(call pkg_libs,$(K8S_LINK_PKGS)) -ldl -lpthread

unit-tests: $(UNIT_TESTS) $(TEST_PLUGINS) $(TEST_TOOLS) $(FUZZ_REPLAYS)

check-unit: all unit-tests
	@tests/run-tests.sh --unit-only $(BUILD)

valgrind-unit: all unit-tests
	@tests/run-tests.sh --unit-only --valgrind $(BUILD)

demo: deps
	@$(MAKE) --no-print-directory all
	@tests/demo/run-demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all $(BUILD)/tests/tools/k8s_client_tool
	@tests/bench/run-bench.sh $(BUILD)

# The installed paths are compiled in (SBX_SYSCONFDIR, SBX_PLUGIN_DIR), so `make` followed by
# `make install PREFIX=/usr` must rebuild: every object depends on a stamp holding the paths,
# rewritten only when they change.
PATHS_STAMP := $(BUILD)/install-paths
$(COMMON_OBJ) $(LOCAL_OBJ) $(K8S_OBJ) $(SHIM_OBJ): $(PATHS_STAMP)
$(PATHS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(VERSION) $(SYSCONFDIR) $(LIBDIR)/sbx' | cmp -s - $@ || \
		echo '$(VERSION) $(SYSCONFDIR) $(LIBDIR)/sbx' >$@
.PHONY: FORCE
FORCE:

# Man pages and units name /usr/bin/sbx, /usr/lib/sbx and /etc/sbx; installing rewrites them
# to the configured directories.
INSTALL_PATHS := sed -e 's|/usr/bin/sbx|$(BINDIR)/sbx|g' -e 's|/usr/lib/sbx|$(LIBDIR)/sbx|g' \
	-e 's|/etc/sbx|$(SYSCONFDIR)/sbx|g'
ABI_VERSION := $(shell sed -n 's/^\#define SBX_EXECUTOR_ABI_VERSION \([0-9]*\)u$$/\1/p' \
	plugin/include/sbx/executor.h)
MAN_PAGES := packaging/man/sbx.1 packaging/man/sbx-executor.3 packaging/man/sbx-config.5
UNITS := packaging/systemd/sbx-gc.service packaging/systemd/sbx-gc.timer

$(BUILD)/sbx-executor.pc: packaging/sbx-executor.pc.in plugin/include/sbx/executor.h $(PATHS_STAMP)
	@mkdir -p $(dir $@)
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
		-e 's|@PLUGINDIR@|$(LIBDIR)/sbx|g' -e 's|@ABI_VERSION@|$(ABI_VERSION)|g' $< >$@

# Never touches $(SYSCONFDIR)/sbx/config.yaml: that file is the administrator's.
install: all $(BUILD)/sbx-executor.pc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/sbx $(DESTDIR)$(INCLUDEDIR)/sbx \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(SYSCONFDIR)/sbx $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(SYSTEMDUNITDIR) \
		$(DESTDIR)$(BASHCOMPLETIONDIR)
	install -m 0755 $(SBX) $(DESTDIR)$(BINDIR)/sbx
	install -m 0644 $(LOCAL_PLUGIN) $(DESTDIR)$(LIBDIR)/sbx/sbx-local.so
	$(if $(K8S_PLUGIN),install -m 0644 $(K8S_PLUGIN) $(DESTDIR)$(LIBDIR)/sbx/)
	install -m 0644 plugin/include/sbx/executor.h $(DESTDIR)$(INCLUDEDIR)/sbx/executor.h
	install -m 0644 $(BUILD)/sbx-executor.pc $(DESTDIR)$(PKGCONFIGDIR)/sbx-executor.pc
	install -m 0644 config-examples/config.yaml $(DESTDIR)$(SYSCONFDIR)/sbx/config.yaml.example
	set -e; for page in $(MAN_PAGES); do \
		section=$${page##*.}; \
		$(INSTALL_PATHS) $$page >$(DESTDIR)$(MANDIR)/man$$section/$${page##*/}; \
		chmod 0644 $(DESTDIR)$(MANDIR)/man$$section/$${page##*/}; \
	done
	set -e; for unit in $(UNITS); do \
		$(INSTALL_PATHS) $$unit >$(DESTDIR)$(SYSTEMDUNITDIR)/$${unit##*/}; \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${unit##*/}; \
	done
	install -m 0644 packaging/bash-completion/sbx $(DESTDIR)$(BASHCOMPLETIONDIR)/sbx

# Removes what install put and the directories only sbx uses, when they are empty; a
# config.yaml the administrator wrote keeps $(SYSCONFDIR)/sbx.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sbx $(DESTDIR)$(LIBDIR)/sbx/sbx-local.so \
		$(DESTDIR)$(LIBDIR)/sbx/sbx-agent-sandbox.so \
		$(DESTDIR)$(INCLUDEDIR)/sbx/executor.h \
		$(DESTDIR)$(PKGCONFIGDIR)/sbx-executor.pc \
		$(DESTDIR)$(SYSCONFDIR)/sbx/config.yaml.example \
		$(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(filter %.1,$(MAN_PAGES)))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(filter %.3,$(MAN_PAGES)))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(filter %.5,$(MAN_PAGES)))) \
		$(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(notdir $(UNITS))) \
		$(DESTDIR)$(BASHCOMPLETIONDIR)/sbx
	for dir in $(DESTDIR)$(LIBDIR)/sbx $(DESTDIR)$(INCLUDEDIR)/sbx $(DESTDIR)$(SYSCONFDIR)/sbx; do \
		[ ! -d "$$dir" ] || rmdir --ignore-fail-on-non-empty "$$dir"; \
	done

clean:
	rm -rf $(BUILD)
