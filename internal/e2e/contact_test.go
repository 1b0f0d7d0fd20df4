package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
)

// form is one contact form as a visitor fills it in.
type form struct {
	Name    string `json:"name"`
	Email   string `json:"email"`
	Message string `json:"message"`
}

// forms are the contact forms of different visitors.
var forms = []form{
	{"Ada Lovelace", "ada@example.com", "I read your post on durable steps and have a question about retries."},
	{"Grace Hopper", "grace@example.org", "Would you speak at our meetup next month? Details to follow."},
	{"Linus", "linus@example.net", "Found a typo in the README quick start, second command."},
	{"Margaret Hamilton", "margaret@example.com", "Loved the write-up on idempotency keys; one more case to consider."},
	{"Katherine Johnson", "katherine@example.org", "Can the milestone webhook post to Discord as well as Slack?"},
	{"Dennis Ritchie", "dennis@example.net", "Is there a way to replay a failed contact email by hand?"},
}

// contactBody is the JSON the site's contact form posts: its three fields
// and the honeypot, left blank by people.
func contactBody(f form) string {
	b, _ := json.Marshal(map[string]string{"name": f.Name, "email": f.Email, "message": f.Message, "website": ""})
	return string(b)
}

// submission is the data of a contact/form.submitted event as the site's
// Next.js route sends it: no id, no ts.
func submission(f form, submittedAt, ip string) string {
	b, _ := json.Marshal(map[string]string{"name": f.Name, "email": f.Email, "message": f.Message, "submittedAt": submittedAt, "ip": ip})
	return string(b)
}

// TestContactFormFromThreeVisitors is issue 12's bug as a visitor meets
// it: three different people send the contact form, one after the other,
// and each must get a confirmation while the owner gets three
// notifications. Before events without an id got one, the second and third
// forms were dropped (one run, one pair of emails).
func TestContactFormFromThreeVisitors(t *testing.T) {
	t.Parallel()
	onBothAndAPartitionedCluster(t, func(t *testing.T, d *deployment) {
		sent := forms[:3]
		for i, f := range sent {
			v := visitorN(i)
			r := v.post(t, d, "/api/contact", "/contact", contactBody(f))
			var ok struct {
				Success bool   `json:"success"`
				Message string `json:"message"`
			}
			r.decode(t, &ok)
			if r.status != http.StatusOK || !ok.Success || !strings.Contains(ok.Message, "confirmation email") {
				t.Fatalf("visitor %d: POST /api/contact = %d %s", i, r.status, r.body)
			}
			if got := r.header.Get("Access-Control-Allow-Origin"); got != siteOrigin {
				t.Errorf("visitor %d: Access-Control-Allow-Origin %q, want %q", i, got, siteOrigin)
			}
		}
		// The runs start as the events are stored: each form has its own.
		if got := d.runs(t, "contact-form-submitted"); len(got) != len(sent) {
			t.Fatalf("%d contact forms started %d runs, want %d: %+v", len(sent), len(got), len(sent), got)
		}
		d.awaitRuns(t, "contact-form-submitted", len(sent))
		expectContactMail(t, d, sent)

		stored := d.events(t, "contact/form.submitted")
		if len(stored) != len(sent) {
			t.Fatalf("%d contact/form.submitted events stored, want %d", len(stored), len(sent))
		}
		ips := map[string]bool{}
		for _, e := range stored {
			var data struct {
				IP          string `json:"ip"`
				SubmittedAt string `json:"submittedAt"`
			}
			json.Unmarshal(e.Data, &data)
			ips[data.IP] = true
			if data.SubmittedAt != epoch.Format("2006-01-02T15:04:05Z") {
				t.Errorf("submittedAt %q, want the daemon's clock %s", data.SubmittedAt, epoch)
			}
		}
		for i := range sent {
			if !ips[visitorN(i).ip] {
				t.Errorf("no event carries visitor %d's address %s (X-Forwarded-For from the trusted proxy): %v", i, visitorN(i).ip, ips)
			}
		}
		d.everyEventHasAnID(t)
	})
}

// expectContactMail checks the fake Resend's outbox after the runs of
// sent completed: each submitter got exactly one confirmation, the owner
// exactly one notification per form, replying to its submitter, and
// nothing else was sent.
func expectContactMail(t *testing.T, d *deployment, sent []form) {
	t.Helper()
	if refused := d.resend.refusals(); len(refused) > 0 {
		t.Errorf("the fake Resend refused: %v", refused)
	}
	notes := d.resend.to(owner)
	for _, f := range sent {
		confirm := d.resend.to(f.Email)
		if len(confirm) != 1 {
			t.Errorf("%s got %d emails, want 1 confirmation", f.Email, len(confirm))
		} else if c := confirm[0]; c.Subject != "Thanks for reaching out!" || c.From != sender || !strings.Contains(c.Text, f.Message) {
			t.Errorf("%s's confirmation: from %q subject %q text %q", f.Email, c.From, c.Subject, c.Text)
		}
		i := slices.IndexFunc(notes, func(e email) bool { return e.ReplyTo == f.Email })
		if i < 0 {
			t.Errorf("the owner got no notification replying to %s", f.Email)
			continue
		}
		if n := notes[i]; n.Subject != "Contact form: "+f.Name || n.From != sender || !strings.Contains(n.Text, f.Message) {
			t.Errorf("notification of %s: from %q subject %q text %q", f.Email, n.From, n.Subject, n.Text)
		}
	}
	if len(notes) != len(sent) {
		t.Errorf("the owner got %d notifications, want %d", len(notes), len(sent))
	}
	if all := d.resend.outbox(); len(all) != 2*len(sent) {
		t.Errorf("%d emails delivered for %d forms, want %d:\n%s", len(all), len(sent), 2*len(sent), describe(all))
	}
	accepted := d.events(t, "contact/email.sent")
	if len(accepted) != 2*len(sent) {
		t.Errorf("%d contact/email.sent events, want %d", len(accepted), 2*len(sent))
	}
}

// describe lists emails one a line, for failure messages.
func describe(all []email) string {
	var b strings.Builder
	for _, e := range all {
		fmt.Fprintf(&b, "  to %v reply-to %q: %s\n", e.To, e.ReplyTo, e.Subject)
	}
	return b.String()
}

// TestContactMailIsBranded sends a contact form whose name and message
// carry a script, as a hostile visitor would, and checks what the fake
// Resend received through resend-go: both emails with an HTML body in the
// site's layout (its name, the colour-scheme declaration, the footer) and
// a plain-text body from the same data, the script shown as text in the
// HTML and as written in the text.
func TestContactMailIsBranded(t *testing.T) {
	t.Parallel()
	d := deploy(t, "sqlite", clockwork.NewFakeClockAt(epoch))
	f := form{`Mallory <script>alert(1)</script>`, "mallory@example.com", `Hello <script>alert("x")</script> & goodbye`}
	if r := visitorN(0).post(t, d, "/api/contact", "/contact", contactBody(f)); r.status != http.StatusOK {
		t.Fatalf("POST /api/contact = %d %s", r.status, r.body)
	}
	d.awaitRuns(t, "contact-form-submitted", 1)
	for _, c := range []struct {
		to, heading, footer string
	}{
		{owner, "New contact form submission", "Sent by the contact form of cyberdrew.dev"},
		{f.Email, "Thanks for reaching out!", "You receive this because you wrote through the contact form of cyberdrew.dev"},
	} {
		got := d.resend.to(c.to)
		if len(got) != 1 {
			t.Fatalf("%s got %d emails, want 1", c.to, len(got))
		}
		e := got[0]
		for _, want := range []string{
			`<meta name="color-scheme" content="light dark">`, `>cyberdrew.dev</a>`, c.heading, c.footer,
			`Mallory &lt;script&gt;alert(1)&lt;/script&gt;`, `Hello &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; goodbye`,
		} {
			if !strings.Contains(e.HTML, want) {
				t.Errorf("the HTML body to %s lacks %s:\n%s", c.to, want, e.HTML)
			}
		}
		if strings.Contains(e.HTML, "<script") {
			t.Errorf("the HTML body to %s carries a live script", c.to)
		}
		for _, want := range []string{"cyberdrew.dev\n", c.footer, f.Message, "https://cyberdrew.dev\n"} {
			if !strings.Contains(e.Text, want) {
				t.Errorf("the text body to %s lacks %q:\n%s", c.to, want, e.Text)
			}
		}
	}
}

// TestOtherSitesCannotPostForTheirVisitors is a page of another site that
// makes each of its visitors' browsers post to the site's routes, as
// sendBeacon or a no-cors fetch of text/plain does without a preflight:
// no contact form (whose confirmation would go to an address of the
// page's choosing, from each visitor's own address, past the per-address
// limit) and no page view is taken. The site's own pages still are, its
// view beacon included, as is a call without a browser's headers.
func TestOtherSitesCannotPostForTheirVisitors(t *testing.T) {
	t.Parallel()
	onBoth(t, func(t *testing.T, d *deployment) {
		const slug = "durable-steps"
		victim := form{"Victim Browser", "anyone@example.org", "This confirmation goes to an address of the attacker's choice."}
		beacon := func(n int, origin, site string) http.Header {
			h := visitorN(n).header("/blog/" + slug)
			h.Set("Content-Type", "text/plain;charset=UTF-8")
			h.Set("Sec-Fetch-Mode", "no-cors")
			h.Set("Sec-Fetch-Site", site)
			if origin == "" {
				h.Del("Origin")
			} else {
				h.Set("Origin", origin)
			}
			return h
		}
		for n, origin := range []string{"https://evil.example", "null"} {
			if r := d.do(t, http.MethodPost, "/api/contact", beacon(n, origin, "cross-site"), contactBody(victim)); r.status != http.StatusForbidden {
				t.Errorf("contact form posted from %s = %d %s, want 403", origin, r.status, r.body)
			}
			if r := d.do(t, http.MethodPost, "/api/views", beacon(n, origin, "cross-site"), viewBody(slug, "", fmt.Sprintf("sess_evil_%04d", n), 6000, "")); r.status != http.StatusForbidden {
				t.Errorf("view posted from %s = %d %s, want 403", origin, r.status, r.body)
			}
		}
		// Without an Origin, a browser's Sec-Fetch-Site still tells.
		if r := d.do(t, http.MethodPost, "/api/views", beacon(2, "", "cross-site"), viewBody(slug, "", "sess_evil_0002", 6000, "")); r.status != http.StatusForbidden {
			t.Errorf("cross-site view without an Origin = %d %s, want 403", r.status, r.body)
		}

		// The site's own beacon (its pages are on another host than the
		// daemon), and a call from a server, which sends neither header.
		for n, h := range []http.Header{beacon(10, siteOrigin, "cross-site"), beacon(11, "", "")} {
			if r := d.do(t, http.MethodPost, "/api/views", h, viewBody(slug, "", fmt.Sprintf("sess_site_%04d", n), 6000, "")); r.status != http.StatusOK {
				t.Fatalf("view %d from the site = %d %s", n, r.status, r.body)
			} else if exposed := r.header.Get("Access-Control-Expose-Headers"); h.Get("Origin") != "" && !strings.Contains(exposed, "Retry-After") {
				// The page reads when to retry a 429 or 503.
				t.Errorf("the site's page may read %q of the answer, want Retry-After among them", exposed)
			}
		}
		d.awaitRuns(t, "track-post-view", 2)
		d.checkViews(t, postViews{slug, 2, 2})
		var events struct {
			Data []json.RawMessage `json:"data"`
		}
		d.admin(t, http.MethodGet, "/v1/events?name=contact%2Fform.submitted", "", &events)
		if len(events.Data) != 0 || len(d.resend.to(victim.Email)) != 0 {
			t.Errorf("%d contact events stored, %d emails to %s; want none", len(events.Data), len(d.resend.to(victim.Email)), victim.Email)
		}
	})
}

// TestContactLimitCoversAnIPv6Subnet has one IPv6 subscriber send the
// contact form from a new address of its /64 each time: the limit of three
// a minute holds for the /64, as it does for one IPv4 address, while
// another subscriber's /64 is not held by it.
func TestContactLimitCoversAnIPv6Subnet(t *testing.T) {
	t.Parallel()
	d := deploy(t, "sqlite", clockwork.NewFakeClockAt(epoch))
	send := func(ip string, n int) int {
		v := visitor{ip: ip, userAgent: browsers[n%len(browsers)]}
		return v.post(t, d, "/api/contact", "/contact", contactBody(forms[n%len(forms)])).status
	}
	for n := range 4 {
		want := http.StatusOK
		if n == 3 {
			want = http.StatusTooManyRequests
		}
		if got := send(fmt.Sprintf("2001:db8:1:2::%x", n+1), n); got != want {
			t.Errorf("form %d from 2001:db8:1:2::%x = %d, want %d", n, n+1, got, want)
		}
	}
	if got := send("2001:db8:1:3::1", 4); got != http.StatusOK {
		t.Errorf("a form from another /64 = %d, want 200", got)
	}
}
