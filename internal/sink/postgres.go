package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/tidwall/gjson"
)

// Defaults of PostgresConfig.
const (
	DefaultPostgresTable    = "audit_events"
	DefaultPostgresTimeout  = 10 * time.Second
	DefaultPostgresMaxConns = 4
)

// PostgresConfig configures a PostgreSQL sink.
type PostgresConfig struct {
	// URL is a libpq connection URL or key=value string without a password:
	// postgres://user@host:5432/db?sslmode=verify-full&sslrootcert=/ca.pem.
	// TLS is configured there (sslmode, sslrootcert, sslcert, sslkey).
	URL string
	// Password, read by the caller from the environment or a file; empty
	// leaves pgx's own sources (PGPASSWORD, ~/.pgpass).
	Password string
	// Table receives the events, "name" or "schema.name"; created when
	// missing (see PostgresSchema). Default DefaultPostgresTable.
	Table string
	// Timeout bounds one Write. Default DefaultPostgresTimeout.
	Timeout time.Duration
	// MaxConns caps the pool. Default DefaultPostgresMaxConns.
	MaxConns int32
}

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// ValidTable reports whether t is a table name the sink accepts: an SQL
// identifier, optionally schema-qualified, without quotes.
func ValidTable(t string) bool { return tableName.MatchString(t) }

func (c *PostgresConfig) defaults() {
	if c.Table == "" {
		c.Table = DefaultPostgresTable
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultPostgresTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultPostgresMaxConns
	}
}

// Validate checks c after defaults.
func (c PostgresConfig) Validate() error {
	c.defaults()
	if c.URL == "" {
		return errors.New("url is required")
	}
	cfg, err := pgconn.ParseConfig(c.URL)
	if err != nil {
		return fmt.Errorf("url does not parse: %s", redactPGError(err))
	}
	if cfg.Password != "" && cfg.Password != c.Password {
		return errors.New("url holds a password: give it by password_env or password_file instead")
	}
	if !ValidTable(c.Table) {
		return fmt.Errorf("table %q is not an identifier (letters, digits, _; optionally schema.table)", c.Table)
	}
	return nil
}

// redactPGError keeps a URL parse error's message without the URL, which
// may hold a secret.
func redactPGError(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if inner := errors.Unwrap(pe); inner != nil {
			return inner.Error()
		}
	}
	return "invalid connection string"
}

// PostgresSchema is the table the sink creates when missing (%s is the
// table); the sink needs these columns, so an operator who creates the table
// beforehand uses this statement or a superset of it.
const PostgresSchema = `CREATE TABLE IF NOT EXISTS %s (
	event_id    text PRIMARY KEY,
	entry_id    text NOT NULL,
	stream      text NOT NULL,
	key_id      text NOT NULL,
	"timestamp" timestamptz,
	actor       text,
	action      text,
	event       jsonb NOT NULL,
	received_at timestamptz NOT NULL DEFAULT now()
)`

// Postgres inserts events into a table, in one statement per batch,
// idempotent on event_id (ON CONFLICT DO NOTHING): a retried entry leaves
// one row.
type Postgres struct {
	name   string
	cfg    PostgresConfig
	log    *slog.Logger
	pool   *pgxpool.Pool
	table  string // sanitized
	insert string

	mu    sync.Mutex
	ready bool // the table exists
}

// NewPostgres validates cfg and prepares a pool; it connects on the first
// Write, so a database that is down at start only delays the entries.
func NewPostgres(name string, cfg PostgresConfig, logger *slog.Logger) (*Postgres, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sink %q: %w", name, err)
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("sink %q: url: %s", name, redactPGError(err))
	}
	if cfg.Password != "" {
		pc.ConnConfig.Password = cfg.Password
	}
	pc.MaxConns = cfg.MaxConns
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = cfg.Timeout
	}
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = "auditproc"
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("sink %q: %s", name, redactPGError(err))
	}
	table := pgx.Identifier(strings.Split(cfg.Table, ".")).Sanitize()
	return &Postgres{
		name: name, cfg: cfg, log: logger, pool: pool, table: table,
		insert: `INSERT INTO ` + table + ` (event_id, entry_id, stream, key_id, "timestamp", actor, action, event)
SELECT e, n, s, k, t, a, c, j::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[]) AS u(e, n, s, k, t, a, c, j)
ON CONFLICT (event_id) DO NOTHING`,
	}, nil
}

// Table is the sanitized name of the sink's table.
func (p *Postgres) Table() string { return p.table }

func (p *Postgres) ensureTable(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready {
		return nil
	}
	_, err := p.pool.Exec(ctx, fmt.Sprintf(PostgresSchema, p.table))
	var pe *pgconn.PgError
	// Two replicas creating the table at once: one of them sees the other's
	// catalog row; the table exists either way.
	if errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "42P07") {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("sink %q: create table %s: %w", p.name, p.table, err)
	}
	p.ready = true
	return nil
}

// Write inserts items in one statement. A row PostgreSQL refuses (a data
// exception, such as a NUL character jsonb cannot hold) is isolated by
// inserting the batch's items one by one and refused for good; every other
// failure (connection, server down, permissions) is retried.
func (p *Postgres) Write(ctx context.Context, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if err := p.ensureTable(ctx); err != nil {
		return err
	}
	err := p.exec(ctx, items)
	if err == nil || !isDataError(err) {
		return err
	}
	if len(items) == 1 {
		return &PermanentError{Sink: p.name, Reason: truncate(err.Error(), 1024)}
	}
	errs := make([]error, len(items))
	for i := range items {
		errs[i] = p.exec(ctx, items[i:i+1])
		if errs[i] != nil && isDataError(errs[i]) {
			errs[i] = &PermanentError{Sink: p.name, Reason: truncate(errs[i].Error(), 1024)}
		}
	}
	return &BatchError{Errs: errs}
}

func (p *Postgres) exec(ctx context.Context, items []Item) error {
	n := len(items)
	ids, entries, streams, keys := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	times := make([]*time.Time, n)
	actors, actions := make([]*string, n), make([]*string, n)
	events := make([]string, n)
	for i, it := range items {
		ids[i], entries[i], streams[i], keys[i] = it.EventID, it.EntryID, it.Stream, it.KeyID
		events[i] = string(it.Event)
		f := gjson.GetManyBytes(it.Event, "timestamp", "actor", "action")
		if f[0].Type == gjson.String {
			if ts, err := time.Parse(time.RFC3339Nano, f[0].Str); err == nil {
				times[i] = &ts
			}
		}
		actors[i], actions[i] = text(f[1]), text(f[2])
	}
	if _, err := p.pool.Exec(ctx, p.insert, ids, entries, streams, keys, times, actors, actions, events); err != nil {
		return fmt.Errorf("sink %q: insert into %s: %w", p.name, p.table, err)
	}
	return nil
}

// text is a member as a column value: a string as itself, any other JSON
// value as its JSON text, a missing member as NULL.
func text(r gjson.Result) *string {
	switch {
	case !r.Exists():
		return nil
	case r.Type == gjson.String:
		return &r.Str
	default:
		return &r.Raw
	}
}

// isDataError: PostgreSQL refused the values themselves (SQLSTATE class 22,
// data exception), which it will do again on every retry.
func isDataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22")
}

// Close closes the pool.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}

// ReadSecret returns a secret from the environment variable env or, when
// env is empty, from file (trailing newline removed). Neither set gives "".
func ReadSecret(env, file string) (string, error) {
	switch {
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", env)
		}
		return v, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read secret file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", nil
}
