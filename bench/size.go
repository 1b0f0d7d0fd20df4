package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dcyfr/cyberdrew/internal/config"
)

// storedBytes is how much the store of a running daemon holds: for SQLite
// the database's size after a checkpoint (page_count × page_size, which is
// the main file's size once the WAL is copied back into it; the WAL
// itself is scratch space that a checkpoint empties), for Redis the
// server's used_memory. detail, for SQLite, says how the bytes split
// between the tables and indexes.
func (e *env) storedBytes(ctx context.Context, backend, dir string) (n int64, detail string, err error) {
	if backend == backendRedis {
		n, err = e.redis.usedMemory(ctx)
		return n, "", err
	}
	return sqliteBytes(ctx, filepath.Join(dir, config.DBFile))
}

// sqliteBytes checkpoints the database at path through a connection of
// its own (the daemon keeps running) and reads its size in bytes, and the
// bytes of each table and index (the dbstat table) as a summary.
func sqliteBytes(ctx context.Context, path string) (int64, string, error) {
	q := url.Values{"_busy_timeout": {"10000"}}
	db, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}).String())
	if err != nil {
		return 0, "", fmt.Errorf("sqlite size: %w", err)
	}
	defer db.Close()
	var busy, logged, moved int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logged, &moved); err != nil {
		return 0, "", fmt.Errorf("sqlite size: checkpoint: %w", err)
	}
	if busy != 0 {
		return 0, "", errors.New("sqlite size: checkpoint: the database stayed busy")
	}
	var pages, size int64
	if err := db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return 0, "", fmt.Errorf("sqlite size: %w", err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&size); err != nil {
		return 0, "", fmt.Errorf("sqlite size: %w", err)
	}
	rows, err := db.QueryContext(ctx, "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
	if err != nil {
		return 0, "", fmt.Errorf("sqlite size: dbstat: %w", err)
	}
	defer rows.Close()
	type part struct {
		name  string
		bytes int64
	}
	var parts []part
	for rows.Next() {
		var p part
		if err := rows.Scan(&p.name, &p.bytes); err != nil {
			return 0, "", fmt.Errorf("sqlite size: dbstat: %w", err)
		}
		parts = append(parts, p)
	}
	if err := rows.Err(); err != nil {
		return 0, "", fmt.Errorf("sqlite size: dbstat: %w", err)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].bytes > parts[j].bytes })
	var b strings.Builder
	for _, p := range parts {
		fmt.Fprintf(&b, " %s=%d", p.name, p.bytes)
	}
	return pages * size, strings.TrimSpace(b.String()), nil
}
