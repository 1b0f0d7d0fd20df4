package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/engine"
)

// completionTimeout bounds the daemon queries of a shell completion: a
// daemon that is down must not hang the shell.
const completionTimeout = 2 * time.Second

// completionClient builds the client of a completion from the flags already
// typed and the environment; nil when they do not make one.
func completionClient(cmd *cobra.Command, opts Options) *client.Client {
	f := newClientFlags(opts)
	fs := cmd.Flags()
	f.server, _ = fs.GetString("server")
	f.token, _ = fs.GetString("token")
	f.eventKey, _ = fs.GetString("event-key")
	f.output = outputTable
	c, err := f.client()
	if err != nil {
		return nil
	}
	return c
}

type completeFunc func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective)

// completeEventNames completes the first argument with the site's known
// events and the names the daemon has seen.
func completeEventNames(opts Options) completeFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := siteEventNames()
		if c := completionClient(cmd, opts); c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
			defer cancel()
			if p, err := c.Events(ctx, client.EventFilter{Limit: 200}); err == nil {
				for _, e := range p.Data {
					names = append(names, e.Name)
				}
			}
			if fns, err := c.Functions(ctx); err == nil {
				for _, fn := range fns {
					for _, t := range fn.Triggers {
						names = append(names, t.Event)
					}
				}
			}
		}
		// Only names send accepts: no pattern, nothing reserved.
		names = slices.DeleteFunc(names, func(n string) bool {
			return n == "" || strings.Contains(n, "*") || engine.ReservedPrefix(n) != ""
		})
		slices.Sort(names)
		return filterPrefix(slices.Compact(names), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// fromDaemon completes with what list reads from the daemon, within
// completionTimeout; nothing when the flags make no client or the daemon
// does not answer. With onlyFirst, only the first argument is completed.
func fromDaemon(opts Options, onlyFirst bool, directive cobra.ShellCompDirective,
	list func(ctx context.Context, c *client.Client, args []string, toComplete string) ([]cobra.Completion, error)) completeFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if onlyFirst && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c := completionClient(cmd, opts)
		if c == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		out, err := list(ctx, c, args, toComplete)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return out, directive
	}
}

// completeFunctionIDs completes a function id with its name as description.
func completeFunctionIDs(opts Options) completeFunc {
	return fromDaemon(opts, true, cobra.ShellCompDirectiveNoFileComp,
		func(ctx context.Context, c *client.Client, _ []string, toComplete string) ([]cobra.Completion, error) {
			fns, err := c.Functions(ctx)
			var out []cobra.Completion
			for _, fn := range fns {
				if strings.HasPrefix(fn.ID, toComplete) {
					out = append(out, cobra.CompletionWithDesc(fn.ID, fn.Name))
				}
			}
			return out, err
		})
}

// completeRunIDs completes run ids, newest first, those with one of
// statuses when given, described by function and status.
func completeRunIDs(opts Options, statuses ...string) completeFunc {
	return fromDaemon(opts, false, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveKeepOrder,
		func(ctx context.Context, c *client.Client, args []string, toComplete string) ([]cobra.Completion, error) {
			p, err := c.Runs(ctx, client.RunFilter{Statuses: statuses, Limit: 100})
			var out []cobra.Completion
			for _, r := range p.Data {
				if strings.HasPrefix(r.RunID, toComplete) && !slices.Contains(args, r.RunID) {
					out = append(out, cobra.CompletionWithDesc(r.RunID, fmt.Sprintf("%s %s", r.FunctionID, r.Status)))
				}
			}
			return out, err
		})
}

// completeEventIDs completes event ids, newest first, described by name.
func completeEventIDs(opts Options) completeFunc {
	return fromDaemon(opts, true, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveKeepOrder,
		func(ctx context.Context, c *client.Client, _ []string, toComplete string) ([]cobra.Completion, error) {
			p, err := c.Events(ctx, client.EventFilter{Limit: 100})
			var out []cobra.Completion
			for _, e := range p.Data {
				if strings.HasPrefix(e.InternalID, toComplete) {
					out = append(out, cobra.CompletionWithDesc(e.InternalID, e.Name))
				}
			}
			return out, err
		})
}

func filterPrefix(names []string, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// fixedCompletion completes a flag with fixed values.
func fixedCompletion(values ...string) completeFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}
