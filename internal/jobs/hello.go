package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// HelloWorld greets the event's email after a durable one-second sleep: the
// smallest function that proves intake, steps, sleeps and output end to end.
func HelloWorld() engine.Function {
	return engine.Function{
		ID:       "hello-world",
		Name:     "Hello World",
		Triggers: []engine.Trigger{{Event: "test/hello.world"}},
		Handler: func(ctx context.Context, run *engine.Run) (any, error) {
			var data struct {
				Email string `json:"email"`
			}
			if err := json.Unmarshal(run.Event.Data, &data); err != nil || data.Email == "" {
				return nil, engine.NonRetriable(errors.New("hello-world: data.email must be a non-empty string"))
			}
			if err := run.Sleep(ctx, "wait-a-moment", time.Second); err != nil {
				return nil, err
			}
			return map[string]string{"message": "Hello " + data.Email + "!"}, nil
		},
	}
}
