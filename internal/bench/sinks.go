package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/pgserver"
	"github.com/auditproc/auditproc/internal/sink"
	"github.com/auditproc/auditproc/internal/syslogserver"
)

// Names of the external sink scenarios.
const (
	ScenarioPostgres = "postgres"
	ScenarioSyslog   = "syslog"
)

// pgTable is the table of the postgres scenario.
const pgTable = "bench_events"

// destination is the throwaway server an external sink scenario forwards
// to: a PostgreSQL cluster or an rsyslogd, started for the run on
// 127.0.0.1 and removed at its end.
type destination struct {
	kind string // ScenarioPostgres or ScenarioSyslog
	// missing says why the scenario is not run (its server is not
	// installed); the other fields are then zero.
	missing string
	sink    config.Sink
	pg      *pgserver.Server
	db      *pgx.Conn
	syslog  *syslogserver.Server
}

// startPostgres starts a PostgreSQL cluster for the postgres scenario, or
// returns a destination saying it is missing.
func startPostgres(ctx context.Context, binDir, dir string) (*destination, error) {
	d := &destination{kind: ScenarioPostgres}
	bin, err := pgserver.Find(binDir)
	if err != nil {
		d.missing = "PostgreSQL is not installed (scripts/deps.sh installs it)"
		return d, nil
	}
	if d.pg, err = pgserver.New(bin); err != nil {
		return nil, err
	}
	if d.db, err = pgx.Connect(ctx, d.pg.DSN()); err != nil {
		d.close()
		return nil, fmt.Errorf("bench: connect to PostgreSQL: %w", err)
	}
	// The password reaches the child through a file of the run's directory
	// (0600), as an operator's password_file.
	pw := filepath.Join(dir, "pg-password")
	if err := os.WriteFile(pw, []byte(d.pg.Password()+"\n"), 0o600); err != nil {
		d.close()
		return nil, err
	}
	d.sink = config.Sink{Type: config.SinkPostgres, Table: pgTable, PasswordFile: pw,
		URL: fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", pgserver.User, d.pg.Addr())}
	return d, nil
}

// startSyslog starts rsyslogd (plain TCP input) for the syslog scenario, or
// returns a destination saying it is missing.
func startSyslog(bin string) (*destination, error) {
	d := &destination{kind: ScenarioSyslog}
	bin, err := syslogserver.Find(bin)
	if err != nil {
		d.missing = "rsyslog is not installed (scripts/deps.sh installs it)"
		return d, nil
	}
	if d.syslog, err = syslogserver.New(syslogserver.Options{Bin: bin}); err != nil {
		return nil, err
	}
	d.sink = config.Sink{Type: config.SinkSyslog, Address: d.syslog.TCPAddr()}
	return d, nil
}

func (d *destination) close() {
	if d == nil {
		return
	}
	if d.db != nil {
		_ = d.db.Close(context.Background())
	}
	if d.pg != nil {
		_ = d.pg.Close()
	}
	if d.syslog != nil {
		d.syslog.Close()
	}
}

// cpu is the destination server's CPU time so far (0 when unknown).
func (d *destination) cpu() time.Duration {
	switch d.kind {
	case ScenarioPostgres:
		pid, err := d.pg.Pid()
		if err != nil {
			return 0
		}
		return treeCPU(pid)
	default:
		return cpuOf(d.syslog.Pid())
	}
}

// reset empties the destination before a drain or a latency run (the
// postgres sink creates its table again at start).
func (d *destination) reset(ctx context.Context) error {
	switch d.kind {
	case ScenarioPostgres:
		_, err := d.db.Exec(ctx, "DROP TABLE IF EXISTS "+pgTable)
		return err
	default:
		return d.syslog.Truncate()
	}
}

// count is how many events the destination holds.
func (d *destination) count(ctx context.Context) (int, error) {
	switch d.kind {
	case ScenarioPostgres:
		var n int
		err := d.db.QueryRow(ctx, "SELECT count(*) FROM "+pgTable).Scan(&n)
		return n, err
	default:
		return d.syslog.Count()
	}
}

// await checks that the destination received every one of n events (the
// sinks confirm before the ack, so all of them are there once the last
// entry is acked; rsyslog writes its file a little later). The postgres
// table is idempotent on event_id: it holds exactly n rows. A syslog
// collector may get a retried entry twice: at least n messages.
func (d *destination) await(ctx context.Context, n int) error {
	var got int
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		got, err = d.count(ctx)
		if err == nil && got >= n {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("%s holds %d of %d events: %w", d.kind, got, n, err)
			}
			return fmt.Errorf("%s holds %d of %d events", d.kind, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.kind == ScenarioPostgres && got != n {
		return fmt.Errorf("postgres holds %d rows for %d events", got, n)
	}
	return nil
}

// arrivals calls yield with every event's id and the time the destination
// received it: PostgreSQL's received_at (now() of the inserting
// transaction), rsyslog's timegenerated.
func (d *destination) arrivals(ctx context.Context, yield func(eventID string, at time.Time)) error {
	switch d.kind {
	case ScenarioPostgres:
		rows, err := d.db.Query(ctx, "SELECT event_id, received_at FROM "+pgTable)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var at time.Time
			if err := rows.Scan(&id, &at); err != nil {
				return err
			}
			yield(id, at)
		}
		return rows.Err()
	default:
		msgs, err := d.syslog.Messages()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			at, err := time.Parse(time.RFC3339Nano, m.Received)
			if err != nil {
				return fmt.Errorf("rsyslog's receive time %q: %w", m.Received, err)
			}
			id := m.SD[sink.DefaultSyslogSDID]["event_id"]
			if id == "" {
				return errors.New("a syslog message without event_id in its structured data")
			}
			yield(id, at)
		}
		return nil
	}
}
