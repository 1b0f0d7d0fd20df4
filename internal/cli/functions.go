package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
)

func newFunctionsCmd(opts Options) *cobra.Command {
	f := newClientFlags(opts)
	cmd := &cobra.Command{
		Use:     "functions",
		Aliases: []string{"fn"},
		Short:   "List and invoke registered functions",
		Long:    "List the daemon's registered functions and invoke one now.",
		Args:    cobra.NoArgs,
	}
	f.register(cmd, true)
	cmd.AddCommand(newFunctionsListCmd(f), newFunctionsInvokeCmd(opts, f))
	return clientCommand(cmd)
}

func newFunctionsListCmd(f *clientFlags) *cobra.Command {
	var trigger string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List functions with their triggers, next cron fire and last hour's runs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			fns, err := c.Functions(cmd.Context())
			if err != nil {
				return err
			}
			shown := []client.Function{}
			for _, fn := range fns {
				if trigger == "" || strings.Contains(fn.TriggerText(), trigger) {
					shown = append(shown, fn)
				}
			}
			if f.json() {
				return writeJSON(cmd.OutOrStdout(), client.Page[client.Function]{Data: shown})
			}
			t := newTable(cmd.OutOrStdout())
			fmt.Fprintln(t, "FUNCTION\tTRIGGERS\tNEXT CRON\tRUNS/H\tFAILED/H\tLAST")
			for _, fn := range shown {
				last := orDash(fn.Stats.LastStatus)
				if fn.Disabled != "" {
					last = "disabled: " + fn.Disabled
				}
				fmt.Fprintf(t, "%s\t%s\t%s\t%d\t%d\t%s\n", fn.ID, fn.TriggerText(), formatTime(fn.NextCron),
					fn.Stats.RunsLastHour, fn.Stats.FailuresLastHour, last)
			}
			return t.Flush()
		},
	}
	cmd.Flags().StringVar(&trigger, "trigger", "", "only functions whose triggers contain this text")
	return cmd
}

func newFunctionsInvokeCmd(opts Options, f *clientFlags) *cobra.Command {
	var (
		data    string
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "invoke FUNCTION_ID",
		Short: "Run a function now, with optional event data",
		Example: `  cyberdrew functions invoke calculate-trending --wait
  cyberdrew functions invoke hello-world --data '{"email":"a@b.c"}'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeFunctionIDs(opts),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var payload []byte
			if data != "" {
				if payload, err = readData(data, cmd.InOrStdin()); err != nil {
					return err
				}
			}
			var st *client.Stream
			if wait {
				if st, err = c.Stream(cmd.Context(), client.StreamFilter{}); err != nil {
					return err
				}
				defer st.Close()
			}
			inv, err := c.Invoke(cmd.Context(), args[0], payload)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !wait {
				if f.json() {
					return writeJSON(out, inv)
				}
				for _, id := range inv.RunIDs {
					fmt.Fprintln(out, id)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "invoked %s (event %s)\n", args[0], inv.EventID)
				return nil
			}
			var res waitResult
			for _, id := range inv.RunIDs {
				d, timedOut, err := waitForRun(cmd.Context(), c, st, id, timeout, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				res.Runs = append(res.Runs, d)
				res.TimedOut = res.TimedOut || timedOut
			}
			if f.json() {
				// What -o json prints without --wait, and the runs.
				if err := writeJSON(out, struct {
					client.Invocation
					waitResult
				}{inv, res}); err != nil {
					return err
				}
			} else {
				printRunResults(out, res.Runs)
			}
			return waitOutcome(res, timeout)
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "event data: a JSON object, @file.json, or - for stdin")
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait for the run and print its result")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long --wait waits")
	return cmd
}
