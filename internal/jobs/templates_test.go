package jobs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/charmbracelet/x/exp/golden"

	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// TestMailGolden renders every email with its sample data, HTML and text,
// against testdata/TestMailGolden/<email>/{html,text}.golden; go test
// -update rewrites them.
func TestMailGolden(t *testing.T) {
	t.Parallel()
	tpl := jobs.DefaultTemplates()
	for _, name := range jobs.MailNames {
		sample, err := jobs.SampleMail(name, jobs.DefaultBrand)
		if err != nil {
			t.Fatal(err)
		}
		e, err := tpl.Render(name, jobs.Email{}, sample)
		if err != nil {
			t.Fatalf("render %s: %v", name, err)
		}
		t.Run(name+"/html", func(t *testing.T) { golden.RequireEqual(t, []byte(e.HTML)) })
		t.Run(name+"/text", func(t *testing.T) { golden.RequireEqual(t, []byte(e.Text)) })
	}
}

// TestMailBranding checks what a reader sees in every email, in both
// bodies: the site's name and address, the colour-scheme declaration
// (HTML), and a footer.
func TestMailBranding(t *testing.T) {
	t.Parallel()
	tpl := jobs.DefaultTemplates()
	for _, name := range jobs.MailNames {
		sample, _ := jobs.SampleMail(name, jobs.DefaultBrand)
		e, err := tpl.Render(name, jobs.Email{}, sample)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`<html lang="en">`, `<meta name="color-scheme" content="light dark">`, `>cyberdrew.dev</a>`, `href="https://cyberdrew.dev"`, `role="presentation"`} {
			if !strings.Contains(e.HTML, want) {
				t.Errorf("%s HTML lacks %s", name, want)
			}
		}
		if strings.Contains(e.HTML, "<style") || strings.Contains(e.HTML, "<link") {
			t.Errorf("%s HTML has a style sheet; mail clients keep inline CSS only", name)
		}
		if !strings.HasPrefix(e.Text, "cyberdrew.dev\n") || !strings.Contains(e.Text, "\n--\n") || !strings.HasSuffix(e.Text, "https://cyberdrew.dev\n") {
			t.Errorf("%s text lacks the site's header or footer:\n%s", name, e.Text)
		}
	}
}

// TestMailEscapesVisitorInput puts a script into everything a visitor
// controls (the contact form's name, address and message; a post title,
// which the view beacon sends) and checks every HTML body carries it as
// text, while the text bodies carry it as written.
func TestMailEscapesVisitorInput(t *testing.T) {
	t.Parallel()
	const evil = `<script>alert("x")</script>`
	tpl := jobs.DefaultTemplates()
	data := map[string]any{
		jobs.MailContact:      jobs.ContactMail{Site: jobs.DefaultBrand, Name: evil, Email: "a@example.com", Message: "Hi " + evil + " & bye", SubmittedAt: evil},
		jobs.MailConfirmation: jobs.ContactMail{Site: jobs.DefaultBrand, Name: evil, Email: "a@example.com", Message: "Hi " + evil + " & bye"},
		jobs.MailMilestone:    jobs.MilestoneMail{Site: jobs.DefaultBrand, Title: evil, Slug: "post", Milestone: "100", Total: "100", PostURL: "https://cyberdrew.dev/blog/post"},
	}
	for _, name := range jobs.MailNames {
		e, err := tpl.Render(name, jobs.Email{}, data[name])
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.ToLower(e.HTML), "<script") {
			t.Errorf("%s HTML carries a live script:\n%s", name, e.HTML)
		}
		if !strings.Contains(e.HTML, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("%s HTML does not show the script as text:\n%s", name, e.HTML)
		}
		if !strings.Contains(e.Text, evil) {
			t.Errorf("%s text does not carry the input as written:\n%s", name, e.Text)
		}
	}
}

// TestTemplateOverrides loads a template directory as --templates does: a
// file in it replaces the embedded one of the same name, the others stay;
// a missing directory, an unknown file, a file that does not parse and one
// that names a field the email has not each fail, naming the file.
func TestTemplateOverrides(t *testing.T) {
	t.Parallel()
	write := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}

	t.Run("replaces one file", func(t *testing.T) {
		t.Parallel()
		dir := write(t, map[string]string{
			"confirmation.txt.tmpl": `{{define "content"}}Merci {{.Name}}{{end}}{{define "footer"}}bye{{end}}`,
			"README.md":             "not a template: ignored",
		})
		tpl, err := jobs.LoadTemplates(dir)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{filepath.Join(dir, "confirmation.txt.tmpl")}; strings.Join(tpl.Overridden, ",") != strings.Join(want, ",") {
			t.Errorf("Overridden = %v, want %v", tpl.Overridden, want)
		}
		e, err := tpl.Render(jobs.MailConfirmation, jobs.Email{}, jobs.ContactMail{Site: jobs.DefaultBrand, Name: "Ada"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(e.Text, "Merci Ada") || !strings.Contains(e.HTML, "Thanks for reaching out!") {
			t.Errorf("override not applied to text only:\ntext %q\nhtml %q", e.Text, e.HTML)
		}
	})

	for _, c := range []struct {
		name  string
		files map[string]string
		want  string // the file the error names
	}{
		{"unknown file", map[string]string{"contatc.html.tmpl": "x"}, "contatc.html.tmpl: not a template of cyberdrew"},
		{"does not parse", map[string]string{"layout.html.tmpl": `{{define "layout"}}{{.Site.Name}`}, "layout.html.tmpl"},
		{"unknown field", map[string]string{"milestone.html.tmpl": `{{define "title"}}t{{end}}{{define "content"}}{{.Tilte}}{{end}}{{define "footer"}}f{{end}}`}, "milestone.html.tmpl with embedded layout.html.tmpl"},
		{"no content block", map[string]string{"contact.txt.tmpl": `{{define "footer"}}f{{end}}`}, "contact.txt.tmpl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := write(t, c.files)
			_, err := jobs.LoadTemplates(dir)
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "")) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("LoadTemplates = %v, want an error naming %s", err, c.want)
			}
		})
	}

	t.Run("missing directory", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "nope")
		_, err := jobs.LoadTemplates(dir)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), dir) {
			t.Errorf("LoadTemplates(missing) = %v, want not-exist naming %s", err, dir)
		}
	})
}
