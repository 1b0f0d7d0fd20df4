package e2e

import (
	"fmt"
	"net/http"
	"testing"
)

// browsers are user agents of real browsers, as the site's visitors send
// them.
var browsers = []string{
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
}

// visitor is one person on the website: the address the reverse proxy saw
// them from and their browser.
type visitor struct {
	ip        string
	userAgent string
}

// visitorN is the n-th distinct visitor (n < 508): each has an address of
// their own, so no two share a rate-limit bucket or a visitor hash.
func visitorN(n int) visitor {
	ip := fmt.Sprintf("198.51.100.%d", n%254+1)
	if n >= 254 {
		ip = fmt.Sprintf("203.0.113.%d", n%254+1)
	}
	return visitor{ip: ip, userAgent: browsers[n%len(browsers)]}
}

// header is what the visitor's browser sends to one of the site's routes
// from page, as the reverse proxy forwards it: a fetch with a JSON body
// from the site's origin.
func (v visitor) header(page string) http.Header {
	return http.Header{
		"Content-Type":      {"application/json"},
		"Accept":            {"*/*"},
		"Accept-Language":   {"en-US,en;q=0.9"},
		"User-Agent":        {v.userAgent},
		"Origin":            {siteOrigin},
		"Referer":           {siteOrigin + page},
		"Sec-Fetch-Mode":    {"cors"},
		"Sec-Fetch-Site":    {"same-origin"},
		"X-Forwarded-For":   {v.ip},
		"X-Forwarded-Proto": {"https"},
	}
}

// post sends the visitor's POST of body to a site route from page.
func (v visitor) post(t *testing.T, d *deployment, path, page, body string) reply {
	t.Helper()
	return d.do(t, http.MethodPost, path, v.header(page), body)
}

// get sends the visitor's GET of a site route from page.
func (v visitor) get(t *testing.T, d *deployment, path, page string) reply {
	t.Helper()
	h := v.header(page)
	h.Del("Content-Type")
	return d.do(t, http.MethodGet, path, h, "")
}
