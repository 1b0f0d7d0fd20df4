package jobs

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"os"
	"path/filepath"
	"slices"
	"strings"
	texttemplate "text/template"
)

// The emails the site sends, by template name.
const (
	// MailContact is the owner's notification of a contact form.
	MailContact = "contact"
	// MailConfirmation is the thank-you to the visitor who wrote.
	MailConfirmation = "confirmation"
	// MailMilestone is the owner's news of a post's view milestone.
	MailMilestone = "milestone"
)

// MailNames lists every email, in the order `email preview` shows them.
var MailNames = []string{MailContact, MailConfirmation, MailMilestone}

// Brand is the site as its emails present it: the name in the header and
// footer, the address they link to, and who signs the confirmation.
type Brand struct {
	Name  string
	URL   string
	Owner string
}

// DefaultBrand is cyberdrew.dev's.
var DefaultBrand = Brand{Name: "cyberdrew.dev", URL: "https://cyberdrew.dev", Owner: "Drew"}

// ContactMail is the data of the contact and confirmation emails.
type ContactMail struct {
	Site        Brand
	Name        string
	Email       string
	Message     string
	SubmittedAt string
}

// MilestoneMail is the data of the milestone email; the counts are already
// written with digit groups.
type MilestoneMail struct {
	Site      Brand
	Title     string
	Slug      string
	Milestone string
	Total     string
	ReachedAt string
	PostURL   string
}

// SampleMail is the data `email preview` renders and every template set
// is checked with when it is loaded.
func SampleMail(name string, site Brand) (any, error) {
	contact := ContactMail{
		Site: site, Name: "Ada Lovelace", Email: "ada@example.com",
		Message:     "Hello Drew,\n\nI read your post on durable steps and have a question about retries.\n\nAda",
		SubmittedAt: "2025-03-12T10:31:00Z",
	}
	switch name {
	case MailContact, MailConfirmation:
		return contact, nil
	case MailMilestone:
		return MilestoneMail{
			Site: site, Title: "Durable steps in one Go binary", Slug: "durable-steps",
			Milestone: "1,000", Total: "1,003", ReachedAt: "2025-03-12T10:31:00Z",
			PostURL: site.URL + "/blog/durable-steps",
		}, nil
	}
	return nil, fmt.Errorf("%w %q: want one of %s", ErrUnknownMail, name, strings.Join(MailNames, ", "))
}

// ErrUnknownMail is the error of a name that is none of MailNames.
var ErrUnknownMail = errors.New("unknown email")

//go:embed mailtemplates/*.tmpl
var embeddedTemplates embed.FS

// The template files: a layout per body type, and each email's blocks
// (title, content, footer) for both.
const (
	layoutHTML = "layout.html.tmpl"
	layoutText = "layout.txt.tmpl"
)

func htmlFile(mail string) string { return mail + ".html.tmpl" }
func textFile(mail string) string { return mail + ".txt.tmpl" }

// templateFiles is every file a template directory may hold.
func templateFiles() []string {
	files := []string{layoutHTML, layoutText}
	for _, m := range MailNames {
		files = append(files, htmlFile(m), textFile(m))
	}
	return files
}

// Templates are the emails' bodies: an html/template and a text/template
// per email, each its own blocks inside the shared layout.
type Templates struct {
	mails map[string]mailTemplate
	// Overridden lists the files read from the override directory.
	Overridden []string
}

// mailTemplate is one email's HTML and text bodies.
type mailTemplate struct {
	html *htmltemplate.Template
	text *texttemplate.Template
}

// DefaultTemplates are the templates built into the binary.
func DefaultTemplates() *Templates {
	t, err := LoadTemplates("")
	if err != nil {
		panic(err) // the embedded files are checked by the golden tests
	}
	return t
}

// LoadTemplates reads the email templates: the embedded ones, each
// replaced by the file of the same name in dir when dir is set. Every
// email is rendered once with its sample data, so that a broken override
// fails here, naming its file, and never in a run. dir must exist and
// hold only files named as the embedded ones (layout.html.tmpl,
// contact.txt.tmpl, …).
func LoadTemplates(dir string) (*Templates, error) {
	src := map[string]string{}   // file name → source
	where := map[string]string{} // file name → path, for errors
	for _, f := range templateFiles() {
		b, err := embeddedTemplates.ReadFile("mailtemplates/" + f)
		if err != nil {
			return nil, fmt.Errorf("email templates: embedded %s: %w", f, err)
		}
		src[f], where[f] = string(b), "embedded "+f
	}
	t := &Templates{mails: map[string]mailTemplate{}}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("email templates: %w", err)
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".tmpl") {
				continue
			}
			if !slices.Contains(templateFiles(), e.Name()) {
				return nil, fmt.Errorf("email templates: %s: not a template of cyberdrew (want one of %s)", path, strings.Join(templateFiles(), ", "))
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("email templates: %w", err)
			}
			src[e.Name()], where[e.Name()] = string(b), path
			t.Overridden = append(t.Overridden, path)
		}
	}
	for _, m := range MailNames {
		var mt mailTemplate
		h := htmltemplate.New(m)
		for _, f := range []string{layoutHTML, htmlFile(m)} {
			if _, err := h.New(f).Parse(src[f]); err != nil {
				return nil, fmt.Errorf("email templates: %s: %w", where[f], err)
			}
		}
		x := texttemplate.New(m)
		for _, f := range []string{layoutText, textFile(m)} {
			if _, err := x.New(f).Parse(src[f]); err != nil {
				return nil, fmt.Errorf("email templates: %s: %w", where[f], err)
			}
		}
		mt.html, mt.text = h, x
		t.mails[m] = mt
		sample, _ := SampleMail(m, DefaultBrand)
		if _, err := mt.renderHTML(sample); err != nil {
			return nil, fmt.Errorf("email templates: %s with %s: %w", where[htmlFile(m)], where[layoutHTML], err)
		}
		if _, err := mt.renderText(sample); err != nil {
			return nil, fmt.Errorf("email templates: %s with %s: %w", where[textFile(m)], where[layoutText], err)
		}
	}
	return t, nil
}

// Render fills e's HTML and text bodies from the email named mail with
// data. The HTML template escapes every value, so user input arrives as
// text; the text body carries it as written.
func (t *Templates) Render(mail string, e Email, data any) (Email, error) {
	mt, ok := t.mails[mail]
	if !ok {
		return e, fmt.Errorf("render: %w %q", ErrUnknownMail, mail)
	}
	h, err := mt.renderHTML(data)
	if err != nil {
		return e, fmt.Errorf("render %s: %w", mail, err)
	}
	x, err := mt.renderText(data)
	if err != nil {
		return e, fmt.Errorf("render %s: %w", mail, err)
	}
	e.HTML, e.Text = h, x
	return e, nil
}

func (mt mailTemplate) renderHTML(data any) (string, error) {
	var b bytes.Buffer
	if err := mt.html.ExecuteTemplate(&b, "layout", data); err != nil {
		return "", fmt.Errorf("html: %w", err)
	}
	return b.String(), nil
}

func (mt mailTemplate) renderText(data any) (string, error) {
	var b bytes.Buffer
	if err := mt.text.ExecuteTemplate(&b, "layout", data); err != nil {
		return "", fmt.Errorf("text: %w", err)
	}
	return b.String(), nil
}
