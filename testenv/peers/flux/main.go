// Command flux-oci pushes and pulls Flux OCI artifacts with Flux's own library,
// github.com/fluxcd/pkg/oci (what `flux push artifact` and `flux pull artifact` run; the
// flux CLI cannot be built from its module, it embeds manifests generated at build time).
// tresor's interop tests use it to check both directions of the format.
//
//	flux-oci push URL DIR [--source S] [--revision R] [--created RFC3339] [--insecure]
//	flux-oci pull URL DIR [--insecure]
//
// push prints the pushed digest reference (repo@sha256:…); pull prints the artifact's
// metadata as JSON (created, source, revision, digest, annotations).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/fluxcd/pkg/oci"
	"github.com/google/go-containerregistry/pkg/crane"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: flux-oci push|pull URL DIR [flags]")
		os.Exit(2)
	}
	verb, url, dir := os.Args[1], os.Args[2], os.Args[3]
	flags := flag.NewFlagSet(verb, flag.ExitOnError)
	source := flags.String("source", "", "org.opencontainers.image.source")
	revision := flags.String("revision", "", "org.opencontainers.image.revision")
	created := flags.String("created", "", "org.opencontainers.image.created (RFC 3339; default now)")
	insecure := flags.Bool("insecure", false, "plain HTTP")
	_ = flags.Parse(os.Args[4:])

	options := oci.DefaultOptions()
	if *insecure {
		options = append(options, crane.Insecure)
	}
	client := oci.NewClient(options)
	ctx := context.Background()
	switch verb {
	case "push":
		meta := oci.Metadata{Source: *source, Revision: *revision, Created: *created}
		digest, err := client.Push(ctx, url, dir, oci.WithPushMetadata(meta))
		exitOn(err)
		fmt.Println(digest)
	case "pull":
		meta, err := client.Pull(ctx, url, dir)
		exitOn(err)
		exitOn(json.NewEncoder(os.Stdout).Encode(meta))
	default:
		exitOn(fmt.Errorf("unknown command %q (push or pull)", verb))
	}
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "flux-oci:", err)
		os.Exit(1)
	}
}
