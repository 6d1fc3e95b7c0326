package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
)

// TestContainerImage builds the image with deploy/build-image and buildah
// (its own storage under a temporary directory, nothing pulled), checks the
// image's user, entrypoint and command against what the Kubernetes manifest
// expects, and runs the image's binary from the image's root file system as
// user 65532: -h, and -check on the default configuration at the path the
// image's command names.
func TestContainerImage(t *testing.T) {
	interop.NeedRoot(t)
	paths := interop.Need(t, "buildah", "chroot")
	dir := t.TempDir()
	flags := "--root " + filepath.Join(dir, "root") + " --runroot " + filepath.Join(dir, "run") + " --storage-driver vfs"
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	buildah := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, paths["buildah"], append(strings.Fields(flags), args...)...)
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("buildah %v: %v\n%s%s", args, err, out, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	const tag = "localhost/hairpin-gateway:test"
	build := exec.CommandContext(ctx, "deploy/build-image", tag)
	build.Env = append(os.Environ(), "BUILDER="+paths["buildah"], "BUILDER_FLAGS="+flags)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build-image: %v\n%s", err, out)
	}
	if got := buildah("inspect", "--format", "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}", tag); got != "65532:65532 [/gateway] [-config /etc/hairpin/gateway.yaml]" {
		t.Errorf("image config %q", got)
	}
	c := buildah("from", tag)
	t.Cleanup(func() {
		_ = exec.Command(paths["buildah"], append(strings.Fields(flags), "rm", c)...).Run()
	})
	rootfs := buildah("mount", c)
	t.Cleanup(func() {
		_ = exec.Command(paths["buildah"], append(strings.Fields(flags), "umount", c)...).Run()
	})
	if _, err := os.Stat(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt")); err != nil {
		t.Errorf("no CA bundle in the image: %v", err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, paths["chroot"], append([]string{"--userspec=65532:65532", rootfs, "/gateway"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("-h"); err != nil || !strings.Contains(out, "Usage: gateway") {
		t.Errorf("/gateway -h in the image: %v\n%s", err, out)
	}
	def, err := run("-print-default-config")
	if err != nil {
		t.Fatalf("-print-default-config: %v\n%s", err, def)
	}
	if err := os.MkdirAll(filepath.Join(rootfs, "etc/hairpin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/hairpin/gateway.yaml"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("-config", "/etc/hairpin/gateway.yaml", "-check"); err != nil {
		t.Errorf("-check of the default configuration in the image: %v\n%s", err, out)
	}
}
