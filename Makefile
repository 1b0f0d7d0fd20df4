# cyberdrew's build tasks. The release (goreleaser.yaml) runs `make completions`.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
SHELLS  := bash zsh fish powershell

.PHONY: build test race lint completions snapshot clean

build: ## the binary, ./cyberdrew
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o cyberdrew ./cmd/cyberdrew

test:
	$(GO) test ./...

race: ## what CI runs
	bash .ci/run

lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo 'gofmt: the files above need formatting'; exit 1; }
	$(GO) vet ./...

completions: ## completions/cyberdrew.{bash,zsh,fish,ps1}
	@mkdir -p completions
	$(GO) run ./cmd/cyberdrew completion bash > completions/cyberdrew.bash
	$(GO) run ./cmd/cyberdrew completion zsh > completions/cyberdrew.zsh
	$(GO) run ./cmd/cyberdrew completion fish > completions/cyberdrew.fish
	$(GO) run ./cmd/cyberdrew completion powershell > completions/cyberdrew.ps1

snapshot: ## a local release in dist/, nothing published
	goreleaser release --snapshot --clean --skip=publish

clean:
	rm -rf cyberdrew dist
