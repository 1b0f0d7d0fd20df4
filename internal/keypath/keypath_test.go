package keypath

import "testing"

func TestKey(t *testing.T) {
	t.Parallel()
	doc := []byte(`{"name":"blog/post.viewed","data":{"slug":"hello","n":42,"nested":{"a":[1, 2]},"nil":null,"empty":"","blank":" "}}`)
	tests := []struct {
		path    string
		want    string
		ok      bool
		wantErr bool
	}{
		{"event.data.slug", "hello", true, false},
		{"data.slug", "hello", true, false},
		{"async.data.slug", "hello", true, false},
		{"event.data.n", "42", true, false},
		{"event.data.nested.a", "[1,2]", true, false},
		{"event.data.nested", `{"a":[1,2]}`, true, false},
		{"event.data.missing", "", false, false},
		{"event.data.slug.deeper", "", false, false},
		{"event.data.nil", "", false, false},
		{"event.data.empty", "", false, false},
		{"event.data.blank", " ", true, false},
		{"event.name", "blog/post.viewed", true, false},
		{"", "", false, true},
		{"event", "", false, true},
		{"event..slug", "", false, true},
	}
	for _, tt := range tests {
		got, ok, err := Key(doc, tt.path)
		if (err != nil) != tt.wantErr {
			t.Errorf("Key(%q) error = %v, want error %v", tt.path, err, tt.wantErr)
			continue
		}
		if got != tt.want || ok != tt.ok {
			t.Errorf("Key(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}
