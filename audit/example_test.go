package audit_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/auditproc/auditproc/audit"
)

// redisURL is the server the example talks to: "redis://localhost:6379/0"
// in a service; TestExample points it at a throwaway server and checks the
// example's output.
var redisURL = audit.DefaultRedisURL

// The whole round trip: sign and append an event, create the consumer group,
// consume the verified event, acknowledge it. Keys come from the environment
// in a service (audit.LoadKeyring(os.Getenv)); the example makes one.
//
// It prints:
//
//	group created: true
//	consumed: user.login by alice (delivery 1)
//	acknowledged: 1, pending: 0
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	key, err := audit.GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	keys, err := audit.NewKeyring("2026-01", map[string][]byte{"2026-01": key})
	if err != nil {
		log.Fatal(err)
	}
	bus, err := audit.New(audit.Config{RedisURL: redisURL, Keys: keys, Stream: "example:audit"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Close()

	// Producer side.
	type login struct {
		Type  string `json:"event_type"`
		Actor string `json:"actor"`
	}
	if _, err := bus.Audit(ctx, login{Type: "user.login", Actor: "alice"}); err != nil {
		log.Fatal(err) // errors.Is(err, audit.ErrUnavailable) when Redis is down
	}

	// Consumer side.
	created, err := bus.CreateGroup(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("group created:", created)
	for msg, err := range bus.Consume(ctx, "worker-1") {
		if err != nil {
			log.Fatal(err)
		}
		var ev login
		if err := msg.Decode(&ev); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("consumed: %s by %s (delivery %d)\n", ev.Type, ev.Actor, msg.Deliveries)
		n, err := bus.Ack(ctx, msg.ID)
		if err != nil {
			log.Fatal(err)
		}
		p, err := bus.Pending(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("acknowledged: %d, pending: %d\n", n, p.Count)
		break
	}
}
