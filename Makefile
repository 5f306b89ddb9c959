# The authorizer: `make run` to try it, `make test` to check it.
SHELL := /bin/bash
.DEFAULT_GOAL := run

REDIS_PORT ?= 6379
METRICS_PORT ?= 9464
DATA       := $(CURDIR)/.data
RELEASE    := $(CURDIR)/.build/release/authorizer
DEBUG      := $(CURDIR)/.build/debug/authorizer
USERS      := $(DATA)/urls.env
SUDO       := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=

.PHONY: deps build release run run-cluster run-webhooks redis-up stop test chaos chaos-ci bench bench-instructions bench-orders bench-webhooks clean install

## deps: install redis-server, libhiredis-dev, a netcat (the README's alternative to `authorizer send`),
## openssl (for the TLS tests), and for the chaos run nftables and redis-py, when missing (Debian/Ubuntu).
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	[ -f /usr/include/hiredis/hiredis.h ] || missing="$$missing libhiredis-dev"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v nc >/dev/null 2>&1 || missing="$$missing netcat-openbsd"; \
	command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing="$$missing nftables"; \
	[ -d /usr/lib/python3/dist-packages/redis ] || missing="$$missing python3-redis"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# pyiso8583: an independent ISO 8583 implementation the interop tests talk to.
	@python3 -c 'import iso8583' 2>/dev/null || pip install --quiet pyiso8583 >/dev/null 2>&1 \
		|| pip install --quiet --break-system-packages pyiso8583 >/dev/null 2>&1 \
		|| echo "pyiso8583 could not be installed: the ISO 8583 interop tests will be skipped"

build: deps
	swift build

release: deps
	swift build -c release

## run: start the project's Redis (if not up), load rules and the demo account, serve on 127.0.0.1:7070
## with Prometheus metrics on 127.0.0.1:$(METRICS_PORT) (what `authorizer top` reads by default).
run: release redis-up
	source $(USERS) && $(RELEASE) rules init
	source $(USERS) && $(RELEASE) account set --if-missing 123 FOOD=1000.00 MEAL=1000.00 CASH=1000.00
	source $(USERS) && exec $(RELEASE) serve --metrics-port $(METRICS_PORT) --iso8583-port 7071 --iso-pan-as-account

## run-cluster: like run, on a local Redis Cluster of 3 masters and 3 replicas (ports 7001-7006,
## data in .data/cluster/); serve finds the cluster from the seed URLs in .data/cluster.env.
## REPLICAS=2: 3 masters with 2 replicas each (ports 7001-7009), the topology that keeps
## approving after a master's loss with nobody restarting anything (`make stop` first to switch).
REPLICAS ?= 1
run-cluster: release
	@REPLICAS=$(REPLICAS) bash scripts/cluster.sh up $(DATA)
	source $(DATA)/cluster.env && $(RELEASE) rules init
	source $(DATA)/cluster.env && $(RELEASE) account set --if-missing 123 FOOD=1000.00 MEAL=1000.00 CASH=1000.00
	source $(DATA)/cluster.env && exec $(RELEASE) serve --metrics-port $(METRICS_PORT) --iso8583-port 7071 --iso-pan-as-account

## run-webhooks: with `make run` serving in another terminal, the example receiver
## (scripts/webhook-receiver.py, port 9000, one JSON line per delivery) and a deliverer sending
## it every holder-facing ledger entry, signed with a new secret in .data/webhook.secret.
run-webhooks: release
	@test -f $(DATA)/urls.env || { echo "start \`make run\` first (in another terminal)"; exit 1; }
	@test -f $(DATA)/webhook.secret || (umask 077 && openssl rand -hex 32 > $(DATA)/webhook.secret)
	@printf 'endpoints:\n  - name: local\n    url: http://127.0.0.1:9000/hooks\n    secret_file: %s\n' "$(DATA)/webhook.secret" > $(DATA)/webhooks.yaml
	WEBHOOK_SECRET=$$(cat $(DATA)/webhook.secret) python3 scripts/webhook-receiver.py --port 9000 & receiver=$$!; \
	trap 'kill $$receiver 2>/dev/null' EXIT; \
	source $(USERS) && $(RELEASE) webhooks deliver --config $(DATA)/webhooks.yaml --db $(DATA)/webhooks.sqlite --metrics-port 9465

## redis-up: generate the ACL users once (.data/credentials.env), start Redis unless it is up.
redis-up: deps
	@bash scripts/redis-users.sh $(DATA) $(REDIS_PORT)
	@source $(USERS); \
	if redis-cli -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG; then \
		redis-cli -p $(REDIS_PORT) ACL LOAD >/dev/null; \
		echo "redis already running on port $(REDIS_PORT) (users reloaded from $(DATA)/users.acl)"; \
	else \
		redis-server $(CURDIR)/redis.conf --port $(REDIS_PORT) --dir $(DATA) --daemonize yes \
			--aclfile $(DATA)/users.acl --pidfile $(DATA)/redis.pid --logfile $(DATA)/redis.log && \
		for i in $$(seq 1 100); do redis-cli -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done; \
		redis-cli -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG || { echo "redis did not start; see $(DATA)/redis.log"; exit 1; }; \
		echo "redis started on port $(REDIS_PORT) (data in $(DATA); credentials in $(DATA)/credentials.env)"; \
	fi

## stop: stop the Redis that `make run` started, and the cluster of `make run-cluster`.
stop:
	@if [ -f $(DATA)/cluster.env ]; then bash scripts/cluster.sh down $(DATA) && echo "redis cluster stopped"; fi
	@if [ -f $(DATA)/redis.pid ] && kill -0 $$(cat $(DATA)/redis.pid) 2>/dev/null; then \
		{ source $(USERS) && redis-cli -p $(REDIS_PORT) shutdown >/dev/null 2>&1; } || kill $$(cat $(DATA)/redis.pid); \
		echo "redis stopped"; \
	else \
		echo "no redis started by make run is running"; \
	fi

## test: unit and integration tests (integration tests start their own Redis servers).
test: deps
	swift build --build-tests
	AUTHORIZER_BIN=$(DEBUG) AUTHORIZER_REDIS_CONF=$(CURDIR)/redis.conf swift test --skip-build --disable-swift-testing

## chaos: a long seeded chaos run (scripts/chaos): CHAOS_PROFILE (C: 3 masters x 2 replicas,
## nftables partitions; S: one Redis behind a fault proxy), CHAOS_SECONDS (1800), CHAOS_SEED
## (random when unset, printed), CHAOS_ARGS (more options, e.g. --replica-acks 0), CHAOS_OUT.
## A progress line every 5 s; the report and the command that replays the run at the end.
CHAOS_PROFILE ?= C
CHAOS_SECONDS ?= 1800
CHAOS_SEED    ?= $(shell echo $$((RANDOM * 32768 + RANDOM)))
CHAOS_OUT     ?= $(CURDIR)/.data/chaos/$(CHAOS_PROFILE)-$(CHAOS_SEED)
chaos: deps
	swift build
	python3 scripts/chaos/chaos.py run --profile $(CHAOS_PROFILE) --seed $(CHAOS_SEED) \
		--seconds $(CHAOS_SECONDS) --out $(CHAOS_OUT) $(CHAOS_ARGS)

## chaos-ci: what CI runs after the tests: the checker's self-test, then fixed seeds that together
## fire every fault kind (S 101, C 202, C 303) and one random seed, about 2 minutes each.
chaos-ci: deps
	bash scripts/chaos/ci.sh

clean:
	rm -rf .build

## install: the release binary to $(PREFIX)/bin, the Lua scripts to $(PREFIX)/share/authorizer/lua,
## redis.conf, rules.example.yaml and an env file example to $(PREFIX)/share/authorizer,
## authorizer.service to $(PREFIX)/lib/systemd/system, and $(SYSCONFDIR)/authorizer/authorizer.env
## unless it exists. All under $(DESTDIR) when set. Build first, then install as root:
##   make release && sudo make install
install:
	@[ -x $(RELEASE) ] || $(MAKE) release
	bash scripts/install.sh $(RELEASE) "$(DESTDIR)" $(PREFIX) $(SYSCONFDIR)

## bench: release build; a fresh Redis and serve on free ports; the Redis ceiling
## (redis-benchmark EVALSHA authorize.lua), closed loop, open loop at 10,000/s,
## the unlock probe and serve's RSS with 10,000 idle connections, CPU per authorization of
## Redis, serve and the generator in every load phase, Redis memory per authorization
## (idempotency records and statement stream); then a table, bench-results/bench.json and
## bench-results/latency.svg (latency by percentile per phase against the SLA).
bench: release
	AUTHORIZER_BIN=$(RELEASE) bash scripts/bench.sh
	AUTHORIZER_BIN=$(RELEASE) bash scripts/bench-webhooks.sh
	AUTHORIZER_BIN=$(RELEASE) bash scripts/bench-orders.sh

## bench-orders: benefit orders: 100,000 lines on 10,000 accounts through `order load`, then the
## same file again; lines/s and Redis CPU per line for both, and the lines' records' memory.
bench-orders: release
	AUTHORIZER_BIN=$(RELEASE) bash scripts/bench-orders.sh

## bench-instructions: instructions redis-server executes per authorize.lua call (valgrind's
## callgrind): plain, with a card, a card and two controls, two program controls. Needs valgrind.
bench-instructions:
	bash scripts/bench-instructions.sh

## bench-webhooks: the webhooks alone: an open loop of 5,000 approvals/s through serve, each
## delivered to a local receiver; deliveries/s, decision-to-arrival p50/p99, deliverer CPU per event.
bench-webhooks: release
	AUTHORIZER_BIN=$(RELEASE) bash scripts/bench-webhooks.sh
