//go:build chaos

package daemon_test

import "testing"

// TestCronFiresEachTickOnceAcrossDaemonsLong is the cross-daemon cron test
// over twenty real ticks.
func TestCronFiresEachTickOnceAcrossDaemonsLong(t *testing.T) {
	t.Parallel()
	cronAcrossDaemons(t, 20)
}
