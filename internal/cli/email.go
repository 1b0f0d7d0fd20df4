package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// emailPreviewOptions are the email preview command's flags and streams.
type emailPreviewOptions struct {
	Mail      string
	File      string
	Templates string
	Text      bool
	Out       io.Writer
	ErrOut    io.Writer
}

func newEmailCmd(opts Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "email",
		Short:   "Work on the site's emails",
		GroupID: groupDaemon,
	}
	cmd.AddCommand(newEmailPreviewCmd(opts))
	return cmd
}

func newEmailPreviewCmd(opts Options) *cobra.Command {
	o := &emailPreviewOptions{Templates: opts.Getenv("CYBERDREW_TEMPLATES")}
	cmd := &cobra.Command{
		Use:   "preview " + strings.Join(jobs.MailNames, "|"),
		Short: "Render one of the site's emails with sample data",
		Long: `Render one of the site's emails with sample data, as the daemon renders it:
contact (the owner's notification of a contact form), confirmation (the
thank-you to the visitor) or milestone (a post passed a view milestone).
It writes the HTML body to stdout, or to the file -o names; --text writes
the plain-text body instead.

--templates (env CYBERDREW_TEMPLATES) takes the same template directory
as serve: its files replace the built-in ones of the same name, and a file
that does not parse or render is an error naming it.`,
		Example: `  cyberdrew email preview contact -o contact.html
  cyberdrew email preview confirmation --text
  cyberdrew email preview milestone --templates ./mail -o milestone.html`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: jobs.MailNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Mail, o.Out, o.ErrOut = args[0], cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runEmailPreview(o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.File, "out", "o", "", "write to this file instead of stdout")
	fs.StringVar(&o.Templates, "templates", o.Templates, "directory of email templates that replace the built-in ones (env CYBERDREW_TEMPLATES)")
	fs.BoolVar(&o.Text, "text", false, "write the plain-text body instead of the HTML")
	return cmd
}

func runEmailPreview(o *emailPreviewOptions) error {
	sample, err := jobs.SampleMail(o.Mail, jobs.DefaultBrand)
	if err != nil {
		return usageErrorf("email preview: %w", err)
	}
	tpl, err := jobs.LoadTemplates(o.Templates)
	if err != nil {
		return &configError{problems: []error{err}}
	}
	e, err := tpl.Render(o.Mail, jobs.Email{}, sample)
	if err != nil {
		return fmt.Errorf("email preview: %w", err)
	}
	body := e.HTML
	if o.Text {
		body = e.Text
	}
	if o.File == "" {
		_, err := io.WriteString(o.Out, body)
		return err
	}
	if err := os.WriteFile(o.File, []byte(body), 0o644); err != nil {
		return fmt.Errorf("email preview: %w", err)
	}
	fmt.Fprintf(o.ErrOut, "wrote %s (%d bytes)\n", o.File, len(body))
	return nil
}
