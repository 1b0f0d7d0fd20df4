// Package e2e holds the end-to-end tests: each starts a real daemon (the
// same wiring as `cyberdrew serve`) on SQLite and on a real redis-server,
// and drives it on loopback HTTP exactly as its real callers do — the
// website's browsers and its Next.js routes (no event id, no ts, a
// browser's headers, many visitors), the official inngest client's request
// shape, and the cyberdrew command line — then asserts what a user sees:
// the emails in a fake Resend, the counts the site serves, the listings of
// the admin API. Only Resend and GitHub are fakes (httptest servers that the
// real resend-go and githubv4 clients talk to); time is a fake clock the
// tests advance.
//
// Start here to see what the site sends and what comes of it; the unit
// tests of each part live beside it (internal/jobs, internal/site,
// internal/api).
package e2e
