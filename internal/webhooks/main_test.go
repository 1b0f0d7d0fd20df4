package webhooks_test

import (
	"testing"

	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

func TestMain(m *testing.M) { backendtest.Main(m, "webhooks") }
