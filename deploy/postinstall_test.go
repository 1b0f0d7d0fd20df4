package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// postinstall runs postinstall.sh with DPKG_ROOT at root, whose settings
// file holds env, and returns the file afterwards.
func postinstall(t *testing.T, root, env string) string {
	t.Helper()
	file := filepath.Join(root, "etc", "cyberdrew", "cyberdrew.env")
	if env != "" {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(env), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "postinstall.sh", "configure")
	cmd.Env = append(os.Environ(), "DPKG_ROOT="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postinstall.sh: %v\n%s", err, out)
	} else if strings.Contains(string(out), "=") {
		t.Errorf("postinstall.sh printed a key: %s", out)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode of the settings file = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	return string(got)
}

var keyLine = regexp.MustCompile(`(?m)^(INNGEST_EVENT_KEY|INNGEST_SIGNING_KEY)=([0-9a-f]{64})$`)

// keys reads the generated keys of a settings file.
func keys(env string) map[string]string {
	out := map[string]string{}
	for _, m := range keyLine.FindAllStringSubmatch(env, -1) {
		out[m[1]] = m[2]
	}
	return out
}

func TestPostinstallGeneratesEmptyKeys(t *testing.T) {
	t.Parallel()
	shipped, err := os.ReadFile("cyberdrew.env")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	first := postinstall(t, root, string(shipped))
	k := keys(first)
	if len(k) != 2 || k["INNGEST_EVENT_KEY"] == k["INNGEST_SIGNING_KEY"] {
		t.Fatalf("keys after install: %v\n%s", k, first)
	}
	for _, name := range []string{"INNGEST_EVENT_KEY=", "INNGEST_SIGNING_KEY="} {
		if n := strings.Count(first, "\n"+name); n != 1 {
			t.Errorf("%s appears %d times:\n%s", name, n, first)
		}
	}
	if again := postinstall(t, root, ""); again != first {
		t.Errorf("an upgrade changed the settings:\n%s\nwas\n%s", again, first)
	}
	other := keys(postinstall(t, t.TempDir(), string(shipped)))
	if other["INNGEST_SIGNING_KEY"] == k["INNGEST_SIGNING_KEY"] {
		t.Errorf("two installs generated the same signing key")
	}
}

func TestPostinstallNeverReplacesASetKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, env string
		keep      string // a line that must stay
		generated string // the key that must be generated
	}{
		{"an old file with both commented out", "#INNGEST_EVENT_KEY=\n#INNGEST_SIGNING_KEY=\n", "", ""},
		{"a set event key", "INNGEST_EVENT_KEY=mine\nINNGEST_SIGNING_KEY=\n", "INNGEST_EVENT_KEY=mine", "INNGEST_SIGNING_KEY"},
		{"a quoted signing key", "INNGEST_SIGNING_KEY=\"s3cret\"\n", "INNGEST_SIGNING_KEY=\"s3cret\"", "INNGEST_EVENT_KEY"},
		{"no file at all", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := postinstall(t, t.TempDir(), tt.env)
			if tt.keep != "" && !strings.Contains(got, tt.keep+"\n") {
				t.Errorf("the set key was replaced:\n%s", got)
			}
			want := 2
			if tt.generated != "" {
				want = 1
				if keys(got)[tt.generated] == "" {
					t.Errorf("%s not generated:\n%s", tt.generated, got)
				}
			}
			if n := len(keys(got)); n != want {
				t.Errorf("%d keys generated, want %d:\n%s", n, want, got)
			}
		})
	}
}
