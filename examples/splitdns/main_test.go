package main

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunExplainAndBadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`dns:
  views:
    - name: inside
      networks: ["192.168.1.0/24"]
      records: ["blog.example.com. 300 IN A 192.168.1.20"]
    - name: outside
      networks: ["0.0.0.0/0"]
      records: ["blog.example.com. 300 IN A {public}"]
`), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("dns:\n  views:\n    - name: x\n      networks: [\"10.0.0.0/33\"]\n"), 0o644)
	for _, tt := range []struct {
		args    []string
		wantErr string
		wantOut string // substring of what run prints
	}{
		{[]string{"-config", good, "-explain", "192.168.1.7"}, "", `view "inside" (#0): source 192.168.1.7 is in 192.168.1.0/24`},
		{[]string{"-config", good, "-explain", "198.51.100.9"}, "", `view "outside" (#1): source 198.51.100.9 is in 0.0.0.0/0`},
		{[]string{"-config", good, "-explain", "nope"}, "-explain", ""},
		{[]string{"-config", bad}, "line 4: dns.views[0].networks[0]", ""},
		{[]string{}, "-config is required", ""},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			flag.CommandLine = flag.NewFlagSet("splitdns", flag.ContinueOnError)
			flag.CommandLine.SetOutput(new(strings.Builder))
			os.Args = append([]string{"splitdns"}, tt.args...)
			out := filepath.Join(t.TempDir(), "stdout")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			stdout := os.Stdout
			os.Stdout = f
			err = run()
			os.Stdout = stdout
			f.Close()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("run: %v, want error containing %q", err, tt.wantErr)
			}
			if printed, _ := os.ReadFile(out); !strings.Contains(string(printed), tt.wantOut) {
				t.Fatalf("printed %q, want it to contain %q", printed, tt.wantOut)
			}
		})
	}
}

// TestExampleFileAndHelp runs the real binary: -h prints a one-line
// description and the flags and exits 0, and example.yaml passes -explain.
func TestExampleFileAndHelp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "splitdns")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "splitdns: split-horizon DNS") || !strings.Contains(string(out), "-shutdown-timeout") {
		t.Fatalf("-h: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "-config", "example.yaml", "-public", "203.0.113.1", "-explain", "192.168.1.7").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `view "inside"`) {
		t.Fatalf("example.yaml: %v\n%s", err, out)
	}
}
