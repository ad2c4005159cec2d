package sink_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/sink"
)

// request is what the test endpoint received.
type request struct {
	header http.Header
	body   []byte
}

// endpoint is a real HTTP server on 127.0.0.1 answering with respond.
type endpoint struct {
	mu   sync.Mutex
	reqs []request
	srv  *httptest.Server
}

func newEndpoint(t *testing.T, respond func(n int, r request, w http.ResponseWriter)) *endpoint {
	e := &endpoint{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rq := request{header: r.Header.Clone(), body: body}
		e.mu.Lock()
		e.reqs = append(e.reqs, rq)
		n := len(e.reqs)
		e.mu.Unlock()
		respond(n, rq, w)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpoint) requests() []request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]request(nil), e.reqs...)
}

// reset closes the connection under w with a TCP RST.
func reset(w http.ResponseWriter) {
	c, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
}

func TestHTTPSinkRetries(t *testing.T) {
	t.Setenv("AUDITPROC_TEST_HTTP_TOKEN", "Bearer t0ken-from-env")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := func(url string) sink.HTTPConfig {
		return sink.HTTPConfig{URL: url, Backoff: time.Millisecond, MaxAttempts: 5,
			HeadersFromEnv: map[string]string{"Authorization": "AUDITPROC_TEST_HTTP_TOKEN"}}
	}

	t.Run("429, 500 and a connection reset are retried", func(t *testing.T) {
		e := newEndpoint(t, func(n int, _ request, w http.ResponseWriter) {
			switch n {
			case 1:
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooManyRequests)
			case 2:
				w.WriteHeader(http.StatusInternalServerError)
			case 3:
				reset(w)
			default:
				w.WriteHeader(http.StatusOK)
			}
		})
		h, err := sink.NewHTTP("webhook", cfg(e.srv.URL), nil)
		require.NoError(t, err)
		defer h.Close()
		batch := items(3, "r")
		require.NoError(t, h.Write(ctx, batch))
		reqs := e.requests()
		require.Len(t, reqs, 4)
		var got []map[string]any
		require.NoError(t, json.Unmarshal(reqs[3].body, &got), "a JSON array")
		require.Len(t, got, 3)
		assert.Equal(t, "r-0002", got[2]["event_id"])
		key := reqs[0].header.Get("Idempotency-Key")
		assert.Len(t, key, 64)
		for _, r := range reqs {
			assert.Equal(t, key, r.header.Get("Idempotency-Key"), "the same key on every attempt")
			assert.Equal(t, "Bearer t0ken-from-env", r.header.Get("Authorization"))
			assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		}
	})

	t.Run("out of attempts: retried later, not refused", func(t *testing.T) {
		e := newEndpoint(t, func(int, request, http.ResponseWriter) {})
		e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
		h, err := sink.NewHTTP("webhook", cfg(e.srv.URL), nil)
		require.NoError(t, err)
		err = h.Write(ctx, items(2, "u"))
		require.Error(t, err)
		assert.False(t, sink.IsPermanent(err))
		assert.Contains(t, err.Error(), "503")
	})

	t.Run("a 400 is not retried and keeps the answer", func(t *testing.T) {
		e := newEndpoint(t, func(_ int, r request, w http.ResponseWriter) {
			if bytes.Contains(r.body, []byte(`"bad-0001"`)) {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `{"error":"field n must be a string"}`)
				return
			}
			w.WriteHeader(http.StatusAccepted)
		})
		h, err := sink.NewHTTP("webhook", cfg(e.srv.URL), nil)
		require.NoError(t, err)
		err = h.Write(ctx, items(3, "bad"))
		errs := sink.ItemErrors(err, 3)
		assert.NoError(t, errs[0], "good events of a refused batch are delivered on their own")
		require.True(t, sink.IsPermanent(errs[1]), "%v", errs[1])
		assert.Contains(t, errs[1].Error(), "HTTP 400")
		assert.Contains(t, errs[1].Error(), "field n must be a string")
		assert.NoError(t, errs[2])
		reqs := e.requests()
		require.Len(t, reqs, 4, "the batch, then each event once; no retry of the 400")
		assert.Equal(t, "bad-0001", reqs[2].header.Get("Idempotency-Key"), "one event: its event id")
	})

	t.Run("connection refused is retried", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		c := cfg("http://" + addr + "/ingest")
		c.MaxAttempts = 2
		h, err := sink.NewHTTP("webhook", c, nil)
		require.NoError(t, err)
		err = h.Write(ctx, items(1, "c"))
		require.Error(t, err)
		assert.False(t, sink.IsPermanent(err))
		assert.NotContains(t, err.Error(), "t0ken")
	})

	t.Run("a header's variable must be set", func(t *testing.T) {
		c := cfg("http://127.0.0.1:1/")
		c.HeadersFromEnv = map[string]string{"Authorization": "AUDITPROC_TEST_UNSET_VARIABLE"}
		_, err := sink.NewHTTP("webhook", c, nil)
		require.ErrorContains(t, err, "AUDITPROC_TEST_UNSET_VARIABLE is not set")
	})
}

// TestHTTPBulkPerItemStatus runs the elasticsearch preset against an
// endpoint that answers _bulk per item like Elasticsearch does.
func TestHTTPBulkPerItemStatus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	stored := map[string]int{}
	throttled := false
	e := newEndpoint(t, func(_ int, r request, w http.ResponseWriter) {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		sc := bufio.NewScanner(bytes.NewReader(r.body))
		for sc.Scan() {
			var meta struct {
				Create struct {
					Index string `json:"_index"`
					ID    string `json:"_id"`
				} `json:"create"`
			}
			require.NoError(t, json.Unmarshal(sc.Bytes(), &meta))
			require.True(t, sc.Scan(), "a document after each action")
			require.Equal(t, "audit", meta.Create.Index)
			id := meta.Create.ID
			switch {
			case strings.HasSuffix(id, "0002") && !throttled:
				throttled = true
				out = append(out, `{"create":{"_id":"`+id+`","status":429,"error":{"type":"es_rejected_execution_exception"}}}`)
			case strings.HasSuffix(id, "0003"):
				out = append(out, `{"create":{"_id":"`+id+`","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}}`)
			case stored[id] > 0:
				out = append(out, `{"create":{"_id":"`+id+`","status":409,"error":{"type":"version_conflict_engine_exception"}}}`)
			default:
				stored[id]++
				out = append(out, `{"create":{"_id":"`+id+`","status":201}}`)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"took":1,"errors":true,"items":[%s]}`, strings.Join(out, ","))
	})
	h, err := sink.NewHTTP("search", sink.HTTPConfig{URL: e.srv.URL + "/_bulk", Preset: sink.PresetElasticsearch,
		Index: "audit", Backoff: time.Millisecond}, nil)
	require.NoError(t, err)
	defer h.Close()
	batch := items(5, "b")
	// b-0000 is already indexed (an earlier attempt of the same entry).
	stored["b-0000"] = 1

	err = h.Write(ctx, batch)
	errs := sink.ItemErrors(err, len(batch))
	assert.NoError(t, errs[0], "409: already indexed, confirmed")
	assert.NoError(t, errs[1])
	assert.NoError(t, errs[2], "429 for this item: sent again alone and indexed")
	require.True(t, sink.IsPermanent(errs[3]), "%v", errs[3])
	assert.Contains(t, errs[3].Error(), "mapper_parsing_exception")
	assert.NoError(t, errs[4])

	reqs := e.requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "application/x-ndjson", reqs[0].header.Get("Content-Type"))
	assert.Equal(t, 2, bytes.Count(reqs[1].body, []byte("\n")), "the retry carries only the throttled item")
	assert.Contains(t, string(reqs[1].body), `"_id":"b-0002"`)
	assert.Contains(t, string(reqs[0].body), `{"create":{"_id":"b-0000","_index":"audit"}}`)
	for id, n := range stored {
		assert.Equal(t, 1, n, "%s indexed once", id)
	}
}

func TestHTTPPresetBodies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		cfg   sink.HTTPConfig
		check func(t *testing.T, r request)
	}{
		{sink.HTTPConfig{Preset: sink.PresetSplunkHEC}, func(t *testing.T, r request) {
			dec := json.NewDecoder(bytes.NewReader(r.body))
			var ev struct {
				Time   float64           `json:"time"`
				Fields map[string]string `json:"fields"`
				Event  map[string]any    `json:"event"`
			}
			require.NoError(t, dec.Decode(&ev))
			assert.Equal(t, "h-0000", ev.Fields["event_id"])
			assert.Equal(t, "h-0000", ev.Event["event_id"])
			assert.InDelta(t, 1796353200.000007, ev.Time, 1e-5)
			require.NoError(t, dec.Decode(&ev), "events are concatenated")
		}},
		{sink.HTTPConfig{Preset: sink.PresetLoki}, func(t *testing.T, r request) {
			var push struct {
				Streams []struct {
					Stream map[string]string `json:"stream"`
					Values [][]any           `json:"values"`
				} `json:"streams"`
			}
			require.NoError(t, json.Unmarshal(r.body, &push))
			require.Len(t, push.Streams, 1)
			assert.Equal(t, "auditproc", push.Streams[0].Stream["job"])
			require.Len(t, push.Streams[0].Values, 2)
			v := push.Streams[0].Values[0]
			assert.Equal(t, "1796353200000007000", v[0])
			assert.Contains(t, v[1], `"event_id":"h-0000"`)
			assert.Equal(t, "h-0000", v[2].(map[string]any)["event_id"])
		}},
		{sink.HTTPConfig{Format: sink.FormatNDJSON}, func(t *testing.T, r request) {
			assert.Equal(t, "application/x-ndjson", r.header.Get("Content-Type"))
			assert.Equal(t, 2, bytes.Count(r.body, []byte("\n")))
		}},
	} {
		name := tc.cfg.Preset + tc.cfg.Format
		t.Run(name, func(t *testing.T) {
			e := newEndpoint(t, func(_ int, _ request, w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) })
			tc.cfg.URL = e.srv.URL
			h, err := sink.NewHTTP("x", tc.cfg, nil)
			require.NoError(t, err)
			require.NoError(t, h.Write(ctx, items(2, "h")))
			reqs := e.requests()
			require.Len(t, reqs, 1)
			tc.check(t, reqs[0])
		})
	}
}

func TestHTTPConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  sink.HTTPConfig
		want string
	}{
		{sink.HTTPConfig{}, "url is required"},
		{sink.HTTPConfig{URL: "ftp://127.0.0.1/"}, "absolute http or https URL"},
		{sink.HTTPConfig{URL: "http://u:secret@127.0.0.1/"}, "holds credentials"},
		{sink.HTTPConfig{URL: "http://127.0.0.1/", Preset: "kafka"}, "not one of splunk_hec"},
		{sink.HTTPConfig{URL: "http://127.0.0.1/", Preset: "elasticsearch"}, "index is required"},
		{sink.HTTPConfig{URL: "http://127.0.0.1/", Format: "xml"}, "must be json or ndjson"},
		{sink.HTTPConfig{URL: "http://127.0.0.1/", HeadersFromEnv: map[string]string{"Bad Header": "X"}}, "not a header name"},
	} {
		err := tc.cfg.Validate()
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
		assert.NotContains(t, err.Error(), "secret")
	}
}
