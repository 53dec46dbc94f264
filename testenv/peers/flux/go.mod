// A helper on Flux's OCI library for tresor's interop tests; scripts/peers.sh builds it.
// github.com/fluxcd/pkg/oci needs Go 1.27: scripts/peers.sh builds this module with
// GOTOOLCHAIN=go1.27.3 (fetched from the Go module proxy).
module tresor.dev/testenv/peers/flux

go 1.27.0

require (
	github.com/fluxcd/pkg/oci v0.74.0
	github.com/google/go-containerregistry v0.22.1
)

require (
	github.com/Masterminds/semver/v3 v3.5.0 // indirect
	github.com/cyphar/filepath-securejoin v0.7.0 // indirect
	github.com/docker/cli v29.7.2+incompatible // indirect
	github.com/docker/docker-credential-helpers v0.9.5 // indirect
	github.com/fluxcd/pkg/sourceignore v0.23.0 // indirect
	github.com/fluxcd/pkg/tar v1.4.0 // indirect
	github.com/fluxcd/pkg/version v0.20.0 // indirect
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
