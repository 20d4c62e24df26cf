# nginx-mdm: build, run and test.  `make run` and `make test` do all set-up.

SHELL      := /bin/bash
TOP        := $(CURDIR)
NGINX_SRC  ?= /usr/share/nginx/src
BUILD      := $(TOP)/build
NGX_BUILD  := $(BUILD)/nginx
MODULE     := $(BUILD)/ngx_mdm_module.so

APT_PACKAGES := nginx nginx-dev build-essential pkg-config \
    libssl-dev libpq-dev libhiredis-dev libjansson-dev libplist-dev \
    libplist-utils libcurl4-openssl-dev postgresql postgresql-contrib \
    redis-server scep openssl curl perl libio-socket-ssl-perl \
    clang libclang-rt-14-dev

PKG_LIBS   := libplist-2.0 libpq hiredis jansson libcurl libssl libcrypto
PKG_CFLAGS  = $(shell pkg-config --cflags $(PKG_LIBS))
PKG_LDLIBS  = $(shell pkg-config --libs $(PKG_LIBS))

INCLUDES   := -It/c -Ingx_mdm_core -Ingx_mdm_scep -Ingx_mdm_checkin -Ingx_mdm_ade \
              -Ingx_mdm_apns
UNIT_CFLAGS = -g -O1 -Wall -Wextra -Wpointer-arith -Wno-unused-parameter \
              -Werror $(INCLUDES) $(PKG_CFLAGS)

.PHONY: all deps build module unit test test-asan fuzz fuzz-smoke run stop bench clean

all: build

# Debian packages; apt-get runs only when one is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' \
	        || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq $$missing; \
	fi

# Unit tests: each t/c/NAME.c names the sources it needs on a line
#   /* sources: ngx_mdm_core/ngx_mdm_x.c ngx_mdm_scep/ngx_mdm_y.c */
# and prints TAP; t/unit.t runs every binary under build/unit/.
unit:
	@mkdir -p $(BUILD)/unit
	@set -e; for t in $(if $(ONLY),t/c/$(ONLY).c,t/c/*.c); do \
	    [ -e "$$t" ] || continue; \
	    n=$$(basename $$t .c); \
	    srcs=$$(sed -n 's@^/\* sources: \(.*\) \*/@\1@p' $$t); \
	    $(CC) $(UNIT_CFLAGS) -o $(BUILD)/unit/$$n $$t $$srcs $(PKG_LDLIBS); \
	done

# Fuzz targets: fuzz/NAME.c, same "sources:" convention, libFuzzer.
FUZZ_SECONDS ?= 20
fuzz:
	@mkdir -p $(BUILD)/fuzz
	@set -e; for t in $(if $(ONLY),fuzz/$(ONLY).c,fuzz/*.c); do \
	    [ -e "$$t" ] || continue; \
	    n=$$(basename $$t .c); \
	    srcs=$$(sed -n 's@^/\* sources: \(.*\) \*/@\1@p' $$t); \
	    clang -g -O1 -fsanitize=fuzzer,address,undefined $(INCLUDES) \
	        $(PKG_CFLAGS) -o $(BUILD)/fuzz/$$n $$t $$srcs $(PKG_LDLIBS); \
	done

# New inputs go to a scratch corpus under build/; the seeds in
# fuzz/corpus/ are only read.
fuzz-smoke: fuzz
	@set -e; for f in $(BUILD)/fuzz/*; do \
	    n=$$(basename $$f); w=$(BUILD)/fuzz-corpus/$$n; mkdir -p $$w; \
	    echo "fuzz $$n for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 $$w \
	        fuzz/corpus/$$n; \
	done

# ---- the module ---------------------------------------------------------
# nginx's source tree is copied under build/ and configured once with the
# installed nginx's flags (conf_flags) so that the module is binary
# compatible; `make module` then rebuilds only what changed.

NGX_CC_OPT ?= -g -O2 -fstack-protector-strong -Wformat \
              -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2
NGX_LD_OPT ?= -Wl,-z,relro -Wl,-z,now -fPIC
NGX_STAMP  := $(NGX_BUILD)/.configured
MDM_SRCS   := config $(wildcard ngx_mdm_*/*.c ngx_mdm_*/*.h ngx_mdm_*/*.part \
              ngx_mdm_core/sql/*.sql)

$(NGX_STAMP): config $(wildcard ngx_mdm_*/*.part ngx_mdm_core/sql/*.sql) | deps
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && \
	    if [ -f conf_flags ]; then . ./conf_flags; \
	    else NGX_CONF_FLAGS=(--with-compat --with-http_ssl_module \
	        --with-http_v2_module --with-http_auth_request_module); fi && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(NGX_CC_OPT)" --with-ld-opt="$(NGX_LD_OPT)" \
	        --add-dynamic-module=$(TOP) > $(BUILD)/configure.log 2>&1 \
	    || { tail -30 $(BUILD)/configure.log; exit 1; }
	touch $@

$(MODULE): $(NGX_STAMP) $(MDM_SRCS)
	$(MAKE) -s -C $(NGX_BUILD) -f objs/Makefile modules
	cp $(NGX_BUILD)/objs/ngx_mdm_module.so $(MODULE).tmp && mv -f $(MODULE).tmp $(MODULE)

module: $(MODULE)
build: deps module unit

clean:
	rm -rf $(BUILD) $(BUILD)-asan

# ---- tests --------------------------------------------------------------

PROVE_ARGS ?= -r t/

test: build
	prove $(PROVE_ARGS)

# The same suite with the module built under AddressSanitizer and
# UndefinedBehaviorSanitizer, preloaded into the stock nginx binary.
ASAN_BUILD := $(TOP)/build-asan
ASAN_LIB    = $(shell gcc -print-file-name=libasan.so)

test-asan: deps
	$(MAKE) module BUILD=$(ASAN_BUILD) \
	    NGX_CC_OPT="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fPIC" \
	    NGX_LD_OPT="-fsanitize=address,undefined -fPIC"
	$(MAKE) unit
	MDM_MODULE=$(ASAN_BUILD)/ngx_mdm_module.so \
	MDM_NGINX_PRELOAD=$(ASAN_LIB) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(ASAN_BUILD)/asan \
	    prove $(PROVE_ARGS)
	@if ls $(ASAN_BUILD)/asan.* >/dev/null 2>&1; then \
	    echo "sanitizer reports:"; cat $(ASAN_BUILD)/asan.*; exit 1; fi

# ---- a local server -----------------------------------------------------

run: build
	@bash conf/run.sh start

stop:
	@bash conf/run.sh stop

bench: build
	@bash bench/run.sh
