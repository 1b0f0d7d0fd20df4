package daemon_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
)

// A client that trickles its headers is cut off once ReadHeaderTimeout has
// passed, however steadily it keeps sending.
func TestSlowlorisIsCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	d := daemontest.Run(t, testConfig(t.TempDir()), nil, daemon.Options{ReadHeaderTimeout: timeout})
	conn, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	began := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		// The server answers 408 or just closes; either way the read ends.
		io.Copy(io.Discard, bufio.NewReader(conn))
		closed <- time.Since(began)
	}()
	if _, err := io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: test\r\n"); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(10 * timeout)
	for {
		select {
		case took := <-closed:
			if took < timeout/2 {
				t.Fatalf("connection closed after %v, before the header timeout of %v", took, timeout)
			}
			t.Logf("trickling client cut off after %v", took)
			return
		case <-tick.C:
			// One more header byte; errors mean the server has hung up.
			conn.Write([]byte("X"))
		case <-giveUp:
			t.Fatalf("a client trickling headers still holds its connection after %v", 10*timeout)
		}
	}
}
