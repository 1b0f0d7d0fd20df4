//go:build chaos

package daemon_test

import "testing"

// TestChaosCronTwentyTicksAcrossDaemons is
// TestCronFiresEachTickOnceAcrossDaemons over twenty real ticks.
func TestChaosCronTwentyTicksAcrossDaemons(t *testing.T) {
	t.Parallel()
	cronAcrossDaemons(t, 20)
}
