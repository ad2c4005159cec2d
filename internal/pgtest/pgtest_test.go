package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/pgtest"
)

func TestStartStopRestart(t *testing.T) {
	s := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgx.ParseConfig(s.URL("postgres"))
	require.NoError(t, err)
	cfg.Password = s.Password()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err, "TLS with verify-full and the password")
	var ssl bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl))
	require.True(t, ssl)
	_, err = conn.Exec(ctx, "CREATE TABLE kept (n int)")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "INSERT INTO kept VALUES (7)")
	require.NoError(t, err)
	conn.Close(ctx)

	require.NoError(t, s.Kill())
	_, err = pgx.Connect(ctx, s.DSN())
	require.Error(t, err, "a killed server does not answer")
	require.NoError(t, s.Start())
	conn, err = pgx.Connect(ctx, s.DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT n FROM kept").Scan(&n))
	require.Equal(t, 7, n)
}
