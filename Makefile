.PHONY: run test test-citus bench bench-quick bench-metrics db-stop build fuzz

run: ## start PostgreSQL if needed and the server on :8080
	./scripts/run.sh

test: ## static checks, static build, all tests against a throwaway PostgreSQL
	./scripts/test.sh

test-citus: ## the whole suite on a throwaway 3-node Citus cluster (Citus installed by hand: README)
	./scripts/test-citus.sh

build:
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/todo .

fuzz: ## the test command with every fuzz target run for FUZZTIME each (default 1m)
	FUZZTIME=$${FUZZTIME:-1m} ./scripts/test.sh

db-stop: ## stop the cluster that `make run` started in .pgdata
	bash -c '. scripts/pg.sh && pg_stop "$$PWD/.pgdata"'

bench: ## benchmark: throwaway PostgreSQL, seeded data, the real binary under HTTP load, pgbench ceiling (~25 min)
	./bench/run.sh

bench-quick: ## the benchmark in about a minute: small data set, one short round
	BENCH_QUICK=1 ./bench/run.sh

bench-metrics: ## what the metrics cost per request: the get handler benchmark with and without them, alternated (~3 min)
	./bench/metrics-overhead.sh
