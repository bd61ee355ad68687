package main

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientsDir holds the typed-client test's packages (pinned by its lock file), the two
// client programs, and, once the test has run, the generated clients and compiled code.
const clientsDir = "testdata/clients"

// npx runs a tool of the typed-client packages and answers its output.
func npx(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npx", append([]string{"--no-install"}, args...)...)
	cmd.Dir = clientsDir
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustNpx(t *testing.T, args ...string) string {
	t.Helper()
	out, err := npx(t, args...)
	if err != nil {
		t.Fatalf("npx %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// generateClients writes both generators' clients for doc, each with its default options.
func generateClients(t *testing.T, doc string) {
	t.Helper()
	for _, d := range []string{"gen", "out"} {
		if err := os.RemoveAll(filepath.Join(clientsDir, d)); err != nil {
			t.Fatal(err)
		}
	}
	mustNpx(t, "openapi-typescript", doc, "-o", "gen/openapi-typescript/schema.d.ts")
	mustNpx(t, "openapi-ts", "-i", doc, "-o", "gen/hey-api")
}

// TestTypedClients: openapi.json passes Redocly's recommended rules (strict: a warning
// fails, save the ones justified in .redocly.lint-ignore.yaml), and the clients that
// openapi-typescript + openapi-fetch and @hey-api/openapi-ts generate from it with their
// default options compile under tsc --strict with a frontend's calls, which then run
// against the service: register, log in, create with a title alone and with every field,
// a filtered list followed through its cursor, If-None-Match, PATCH, stats, the section 6
// routes, and a 422 whose errors are typed.
func TestTypedClients(t *testing.T) {
	if _, err := exec.LookPath("npx"); err != nil {
		t.Fatalf("npx (Node.js) is required for the typed-client test: %v", err)
	}
	if _, err := os.Stat(filepath.Join(clientsDir, "node_modules")); err != nil {
		t.Fatalf("the typed-client packages are not installed (npm ci --prefix %s; make test does it): %v", clientsDir, err)
	}
	doc, err := filepath.Abs("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("lint", func(t *testing.T) {
		mustNpx(t, "redocly", "lint", doc, "--extends=recommended-strict")
	})

	generateClients(t, doc)
	mustNpx(t, "tsc", "-p", "tsconfig.json")
	env := newTestEnv(t)
	srv := httptest.NewServer(env.srv)
	t.Cleanup(srv.Close)
	for _, program := range []string{"openapi-fetch", "hey-api"} {
		t.Run(program, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", filepath.Join("out", "src", program+".js"), srv.URL)
			cmd.Dir = clientsDir
			out, err := cmd.CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "ok" {
				t.Fatalf("%s client against the service: %v\n%s", program, err, out)
			}
		})
	}

	// The check has teeth: a request schema with a default (what the document had
	// before), which openapi-typescript's default options turn into a required property,
	// makes the title-only create fail to compile.
	t.Run("a default in a request schema breaks the build", func(t *testing.T) {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		const completed = `"completed": { "type": "boolean", "description": "Left out: false." },`
		if !strings.Contains(string(raw), completed) {
			t.Fatal("TaskCreate.completed is not where this test expects it")
		}
		broken := filepath.Join(t.TempDir(), "openapi.json")
		if err := os.WriteFile(broken, []byte(strings.Replace(string(raw), completed,
			`"completed": { "type": "boolean", "default": false },`, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		generateClients(t, broken)
		out, err := npx(t, "tsc", "-p", "tsconfig.json")
		if err == nil || !strings.Contains(out, "completed") {
			t.Fatalf("tsc accepted a client generated from a document with a default in a request schema:\n%s", out)
		}
		generateClients(t, doc) // leave the directory as the document makes it
	})
}
