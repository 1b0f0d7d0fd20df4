package cli

import (
	"io"
	"log/slog"

	"github.com/mattn/go-isatty"

	"github.com/dcyfr/cyberdrew/internal/config"
)

// NewLogger builds the process logger writing to w at level. format is
// config.LogText, config.LogJSON or config.LogAuto: text when w is a
// terminal, JSON otherwise.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == config.LogText || (format == config.LogAuto && isTerminal(w)) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	opts.ReplaceAttr = durationText
	return slog.New(slog.NewJSONHandler(w, opts))
}

// durationText writes a duration as the text a flag takes ("2s", "1m30s"),
// where the JSON handler writes its nanoseconds; the text handler already
// does.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// isTerminal reports whether v, a reader or a writer, is a terminal.
func isTerminal(v any) bool {
	f, ok := v.(interface{ Fd() uintptr })
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
