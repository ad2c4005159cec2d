package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/auditproc/auditproc/internal/redistest"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// pgImage is the PostgreSQL image scripts/postgres-image.sh builds from
// this machine's postgresql package (nothing pulled).
const pgImage = "auditproc/postgres:15-local"

// pgPasswordEnv is the variable the replicas read the database password
// from (sinks.archive.password_env).
const pgPasswordEnv = "ARCHIVE_DB_PASSWORD"

// pgServer is the scenario's PostgreSQL container, "postgres" on the
// cluster's network.
type pgServer struct {
	ctr      *testcontainers.DockerContainer
	password string
}

func startPostgres(t *testing.T, network string) *pgServer {
	t.Helper()
	root, err := wasmtest.FindRoot()
	require.NoError(t, err)
	out, err := exec.Command(filepath.Join(root, "scripts", "postgres-image.sh")).CombinedOutput()
	require.NoError(t, err, "scripts/postgres-image.sh: %s", out)
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	s := &pgServer{password: hex.EncodeToString(pw[:])}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s.ctr, err = testcontainers.Run(ctx, pgImage,
		testcontainers.WithEnv(map[string]string{"POSTGRES_PASSWORD": s.password}),
		testcontainers.WithExposedPorts("5432/tcp"),
		testcontainers.WithLabels(map[string]string{redistest.LabelTest: t.Name()}),
		tcnetwork.WithNetworkName([]string{"postgres"}, network),
		// The image has no shell tools for a port probe: its log says when.
		testcontainers.WithWaitStrategy(wait.ForLog("database system is ready to accept connections").WithStartupTimeout(2*time.Minute)),
	)
	if s.ctr != nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = s.ctr.Terminate(ctx, testcontainers.StopTimeout(0))
		})
	}
	require.NoError(t, err, "start %s", pgImage)
	return s
}

// conn connects from the test (through the mapped port, which changes
// when the container restarts).
func (s *pgServer) conn(ctx context.Context) (*pgx.Conn, error) {
	host, err := s.ctr.Host(ctx)
	if err != nil {
		return nil, err
	}
	port, err := s.ctr.MappedPort(ctx, "5432/tcp")
	if err != nil {
		return nil, err
	}
	return pgx.Connect(ctx, fmt.Sprintf("postgres://auditproc:%s@%s:%s/postgres?sslmode=disable", s.password, host, port.Port()))
}

func (c *cluster) replicaEnv() map[string]string {
	env := map[string]string{"AUDITPROC_HMAC_KEYS": c.keyLine}
	if c.pg != nil {
		env[pgPasswordEnv] = c.pg.password
	}
	return env
}

// pgRows counts the archive table's rows per entry id.
func (c *cluster) pgRows(ctx context.Context) (map[string]int, int) {
	c.t.Helper()
	var conn *pgx.Conn
	var err error
	waitFor(c.t, time.Minute, "PostgreSQL to answer the check", func() bool {
		conn, err = c.pg.conn(ctx)
		return err == nil
	})
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT entry_id, count(*) FROM audit_events GROUP BY entry_id`)
	require.NoError(c.t, err)
	out, total := map[string]int{}, 0
	for rows.Next() {
		var id string
		var n int
		require.NoError(c.t, rows.Scan(&id, &n))
		out[id] = n
		total += n
	}
	require.NoError(c.t, rows.Err())
	return out, total
}

// TestPostgresSinkRestart runs two replicas whose pipeline archives every
// event to a PostgreSQL container, and restarts the database under load
// (docker stop, 5 s down, start). The invariant table gains the archive's
// rows: every processed entry has exactly one row (a retried entry kept its
// event id), none is missing.
func TestPostgresSinkRestart(t *testing.T) {
	c := newCluster(t, options{postgres: true})
	a, b := c.startReplica("replica-a"), c.startReplica("replica-b")
	p := c.produce(ciEvents, ciRate, 0)
	p.waitWritten(ciEvents/10, time.Minute)
	ctx := context.Background()
	stop := time.Second
	require.NoError(t, c.pg.ctr.Stop(ctx, &stop))
	c.note("PostgreSQL stopped after %d acknowledged writes", p.count.Load())
	time.Sleep(5 * time.Second)
	require.NoError(t, c.pg.ctr.Start(ctx))
	c.note("PostgreSQL started again; producer at %d acknowledged writes", p.count.Load())
	p.wait(2 * time.Minute)
	c.drain(3 * time.Minute)
	failed := a.logCount("sink_write_failed") + b.logCount("sink_write_failed")
	c.note("replicas logged sink_write_failed %d times", failed)
	r := c.check(p, "PostgreSQL sink: the database restarted under load")
	assert.Positive(t, failed, "the replicas met the outage")

	perEntry, total := c.pgRows(ctx)
	processed := c.sinkByEntry(ctx, c.names.out, nil) // entries every plugin ran on, acked
	missing, doubled, archived := 0, 0, 0
	for id := range processed {
		if perEntry[id] == 0 {
			missing++
		}
	}
	for _, n := range perEntry {
		doubled += n - 1
		archived++
	}
	table := fmt.Sprintf("=== invariant: %s (archive table)\n", r.Scenario) +
		fmt.Sprintf("  rows in audit_events                         %d\n", total) +
		fmt.Sprintf("  entries with a row                           %d\n", archived) +
		fmt.Sprintf("  processed entries without a row              %d  %s\n", missing, okText(missing)) +
		fmt.Sprintf("  extra rows of one entry (new event id)       %d  %s\n", doubled, okText(doubled))
	t.Log("\n" + table)
	appendReport(t, table)
	assert.Zero(t, missing, "every processed entry is in the archive")
	assert.Zero(t, doubled, "no entry twice in the archive")
	assert.Equal(t, r.Processed, archived, "the archive holds the processed entries, and only them")
}

func okText(n int) string {
	if n == 0 {
		return "ok"
	}
	return "VIOLATION"
}
