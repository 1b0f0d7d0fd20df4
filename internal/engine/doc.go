// Package engine executes durable functions: it matches events to function
// triggers, creates runs through the store with their flow-control keys, fires
// cron schedules, and runs handlers whose named steps are memoized, retried
// with backoff, suspended by sleeps and waits, and never executed again once
// completed.
package engine
