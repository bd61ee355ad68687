package main

// What the service's binary links: its run-time modules and nothing that only the tests
// use. See README.md, "Dependencies".

import (
	"debug/buildinfo"
	"slices"
	"sort"
	"testing"
)

// binaryModules are the modules the binary may link: the three run-time dependencies
// (pgx, golang-jwt, x/crypto) and the modules they bring. The test-only modules
// (chromedp and its cdproto, jsonschema) are in go.mod too, since tests import them, but
// a non-test file that imported one would link it, and this list would not hold it.
var binaryModules = []string{
	"github.com/jackc/pgx/v5",
	"github.com/jackc/pgpassfile",
	"github.com/jackc/pgservicefile",
	"github.com/jackc/puddle/v2",
	"github.com/golang-jwt/jwt/v5",
	"golang.org/x/crypto",
	"golang.org/x/sync",
	"golang.org/x/sys",
	"golang.org/x/text",
}

// TestBinaryDependencies builds the binary as it ships and reads the modules it
// links from its build information, as `go version -m` prints them.
func TestBinaryDependencies(t *testing.T) {
	t.Parallel()
	info, err := buildinfo.ReadFile(relBinary(t))
	if err != nil {
		t.Fatalf("read the binary's build information: %v", err)
	}
	var linked []string
	for _, m := range info.Deps {
		linked = append(linked, m.Path)
		if m.Replace != nil {
			linked = append(linked, m.Replace.Path)
		}
	}
	sort.Strings(linked)
	for _, m := range linked {
		if !slices.Contains(binaryModules, m) {
			t.Errorf("the binary links %s, which is not a run-time dependency", m)
		}
	}
	for _, m := range []string{"github.com/jackc/pgx/v5", "github.com/golang-jwt/jwt/v5", "golang.org/x/crypto"} {
		if !slices.Contains(linked, m) {
			t.Errorf("the binary does not link %s; its modules: %v", m, linked)
		}
	}
}
