package daemon_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFullDiskFailsReadinessAndRecovers runs a SQLite daemon on a small
// tmpfs, fills it: intake answers 503 and /readyz fails within its timeout;
// once the filler is removed /readyz recovers by itself. Mounting needs
// root (CI runs as root); elsewhere the test skips, loudly.
func TestFullDiskFailsReadinessAndRecovers(t *testing.T) {
	t.Parallel()
	dir := smallDisk(t)
	base := start(t, testConfig(dir), nil) // stopped before the unmount
	if code, body, _ := probe(t, "GET", base+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("/readyz before the disk filled = %d %s", code, body)
	}

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	code, body, _ := probe(t, "POST", base+"/e/anykey", `{"name":"test/hello.world","id":"full-1","data":{"email":"a@b.c"}}`)
	if code != http.StatusServiceUnavailable {
		t.Errorf("intake on a full disk = %d %s, want 503", code, body)
	}
	code, body, took := probe(t, "GET", base+"/readyz", "")
	if code != http.StatusServiceUnavailable || took > 2*time.Second+slack {
		t.Errorf("/readyz on a full disk = %d %s after %v, want 503 within its timeout", code, body, took)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	awaitReady(t, base, "the space returning")
	if code, body, _ := probe(t, "POST", base+"/e/anykey", `{"name":"test/hello.world","id":"full-1","data":{"email":"a@b.c"}}`); code != http.StatusOK {
		t.Errorf("the resend once space returned = %d %s", code, body)
	}
}

// smallDisk mounts an 8 MiB tmpfs for the test, unmounted after it (and
// after the daemons its cleanups stop). Mounting needs root (CI runs as
// root); elsewhere the test skips, loudly.
func smallDisk(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("SKIPPING DISK-FULL TEST: cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("filling the disk: %v", err)
		}
	}
}

// TestNearlyFullDiskFailsReadiness leaves less room on the data dir's disk
// than an event needs, though more than the readiness write does: /readyz
// must answer 503 naming the disk while intake refuses events, where it
// answered 200 "ok" because its own small write still fitted.
func TestNearlyFullDiskFailsReadiness(t *testing.T) {
	t.Parallel()
	dir := smallDisk(t)
	base := start(t, testConfig(dir), nil)
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	info, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, info.Size()-128<<10); err != nil { // 128 KiB free
		t.Fatal(err)
	}
	big := `{"name":"test/hello.world","id":"big-1","data":{"email":"a@b.c","pad":"` + strings.Repeat("x", 200<<10) + `"}}`
	if code, body, _ := probe(t, "POST", base+"/e/anykey", big); code != http.StatusServiceUnavailable {
		t.Errorf("a 200 KiB event on a disk with 128 KiB free = %d %.200s, want 503", code, body)
	}
	if code, body, _ := probe(t, "GET", base+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "nearly full") {
		t.Errorf("/readyz with 128 KiB free = %d %s, want 503 saying the disk is nearly full", code, body)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	awaitReady(t, base, "the space returning")
	if code, body, _ := probe(t, "POST", base+"/e/anykey", big); code != http.StatusOK {
		t.Errorf("the resend once space returned = %d %.200s", code, body)
	}
}
