package config_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/config"
)

func TestExternalSinks(t *testing.T) {
	cfg, err := config.Load(config.Source{File: "testdata/sinks.yaml", NoPipeline: true})
	require.NoError(t, err)
	pg := cfg.Sinks["archive"]
	assert.True(t, pg.External())
	assert.Equal(t, filepath.Join("testdata", "pg-password"), pg.PasswordFile, "relative to the file")
	assert.Equal(t, filepath.Join("testdata", "ca.pem"), cfg.Sinks["siem"].CAFile)
	assert.False(t, config.Sink{Type: "stream"}.External())

	_, err = pg.OpenExternal("archive", nil)
	require.Error(t, err, "the password file does not exist")
	assert.Contains(t, err.Error(), "sinks.archive.password")

	t.Setenv("AUDITPROC_TEST_ES_AUTH", "ApiKey c2VjcmV0")
	s, err := cfg.Sinks["search"].OpenExternal("search", nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}

func TestSinkSecretsAreNeverEchoed(t *testing.T) {
	for _, f := range []string{"testdata/sink-postgres-password.bad.yaml", "testdata/sink-postgres-url-password.bad.yaml"} {
		_, err := config.Load(config.Source{File: f})
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "hunter2")
	}
}
