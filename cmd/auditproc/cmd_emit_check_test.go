package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/auditproc/auditproc/internal/integrity"
)

// testEventLine is a good event of about 300 bytes, different for every i.
func testEventLine(i int) string {
	actions := []string{"login", "logout", "read", "update", "delete"}
	return fmt.Sprintf(`{"actor":"u-%04d","action":"%s","target":"invoice/%06d","outcome":"%s",`+
		`"source_ip":"10.%d.%d.%d","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",`+
		`"request_id":"req-%016x","session":"s-%08x-%08x","n":%d}`,
		i%9973, actions[i%len(actions)], i, []string{"success", "failure"}[i%7/6],
		i>>16&255, i>>8&255, i&255, uint64(i)*0x9e3779b97f4a7c15, i*31, i*17, i)
}

// testEventLines is n lines (numbered from 1), good events unless bad
// names another content for the line.
func testEventLines(n int, bad map[int]string) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = testEventLine(i + 1)
		if b, ok := bad[i+1]; ok {
			lines[i] = b
		}
	}
	return lines
}

// checkLinesSequential is pass 1 as it was before it ran in parallel: the
// reference checkLines must agree with.
func checkLinesSequential(r io.Reader, maxBytes int, check func(line []byte, no int) error) (int, error) {
	n := 0
	err := eachLine(r, maxBytes, func(line []byte, no int) error {
		if err := check(line, no); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// TestCheckLinesAgreesWithSequential: checkLines gives the count, the
// error and the hash of the bytes read that checking the lines one after
// the other gives, for files many chunks long: the refused line reported is
// the lowest, even when a later one was refused first; a line too long and
// a read error count where they are in the file; and no goroutine outlives
// the call (synctest fails a test whose goroutines remain blocked).
func TestCheckLinesAgreesWithSequential(t *testing.T) {
	const lines = 8 * checkChunkLines // several chunks on every checker
	const maxBytes = integrity.DefaultMaxEventBytes
	long := `{"a":"` + strings.Repeat("y", 2<<20) + `"}` // a 2 MB line
	errRead := errors.New("test: read failed")
	for _, tc := range []struct {
		name    string
		content string
		after   error // a read error after the content
		// gate, if set: the check of line gate[0] waits until line
		// gate[1] has been checked (and refused).
		gate    [2]int
		wantErr string // part of the error; "" for none
	}{
		{name: "all good", content: strings.Join(testEventLines(lines, nil), "\n") + "\n"},
		{name: "all good, last line without newline", content: strings.Join(testEventLines(lines, nil), "\n")},
		{name: "blank lines and blanks around lines",
			content: strings.Join(testEventLines(lines, map[int]string{3: "", 4: "  \t", 900: "   " + testEventLine(900) + "\r", 2000: ""}), "\n") + "\n\n  \n"},
		{name: "empty", content: ""},
		{name: "only blank lines", content: "\n \n\t\n"},
		{name: "two bad lines far apart", content: strings.Join(testEventLines(lines, map[int]string{700: `{"a":`, 3500: `null`}), "\n"),
			gate: [2]int{699, 3500}, wantErr: "line 700: rule json"},
		{name: "bad lines in one chunk", content: strings.Join(testEventLines(lines, map[int]string{1030: `[]`, 1031: `{"a":`, 1500: `null`}), "\n"),
			wantErr: "line 1030: rule object"},
		{name: "bad line in the last chunk", content: strings.Join(testEventLines(lines, map[int]string{lines - 1: `{"timestamp":"last tuesday"}`}), "\n"),
			wantErr: fmt.Sprintf("line %d: rule timestamp", lines-1)},
		{name: "bad last line", content: strings.Join(testEventLines(lines, map[int]string{lines: `{"event_id":5}`}), "\n") + "\n",
			wantErr: fmt.Sprintf("line %d: rule event_id", lines)},
		{name: "bad line before a line too long", content: strings.Join(testEventLines(lines, map[int]string{2100: `{"a":`, 2101: long}), "\n"),
			wantErr: "line 2100: rule json"},
		{name: "line too long before a bad line", content: strings.Join(testEventLines(lines, map[int]string{2100: long, 2101: `{"a":`}), "\n"),
			wantErr: "line 2100 is longer than the limit of an event, 1 MiB"},
		{name: "line too long, far after a bad line", content: strings.Join(testEventLines(lines, map[int]string{10: `{"a":`, lines - 5: long}), "\n"),
			wantErr: "line 10: rule json"},
		{name: "read error", content: strings.Join(testEventLines(lines, nil), "\n") + "\n", after: errRead,
			wantErr: errRead.Error()},
		{name: "bad line before a read error", content: strings.Join(testEventLines(lines, map[int]string{lines - 3: "{"}), "\n") + "\n", after: errRead,
			wantErr: fmt.Sprintf("line %d: rule json", lines-3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			open := func() io.Reader {
				r := io.Reader(strings.NewReader(tc.content))
				if tc.after != nil {
					r = io.MultiReader(r, iotest.ErrReader(tc.after))
				}
				return r
			}
			check := eventChecker("events.jsonl", maxBytes)
			h := sha256.New()
			wantN, wantErr := checkLinesSequential(io.TeeReader(open(), h), maxBytes, check)
			wantSum := h.Sum(nil)
			if tc.wantErr == "" {
				require.NoError(t, wantErr)
			} else {
				require.ErrorContains(t, wantErr, tc.wantErr, "the reference")
			}

			synctest.Test(t, func(t *testing.T) {
				checked := make(chan struct{})
				gated := func(line []byte, no int) error {
					if tc.gate[0] != 0 && no == tc.gate[0] {
						<-checked
					}
					err := check(line, no)
					if tc.gate[1] != 0 && no == tc.gate[1] {
						close(checked)
					}
					return err
				}
				h := sha256.New()
				n, err := checkLines(t.Context(), io.TeeReader(open(), h), maxBytes, 3, gated)
				assert.Equal(t, wantErr, err)
				assert.Equal(t, wantN, n)
				if wantErr == nil {
					assert.Equal(t, wantSum, h.Sum(nil), "the hash of every byte")
				}
			})
		})
	}
}

// endlessEvents reads good event lines without end, up to limit bytes, then
// fails with errTooFar.
type endlessEvents struct {
	buf   bytes.Buffer
	i     int
	read  int
	limit int
}

var errTooFar = errors.New("test: read on after the end")

func (r *endlessEvents) Read(p []byte) (int, error) {
	if r.read >= r.limit {
		return 0, errTooFar
	}
	for r.buf.Len() < len(p) {
		r.i++
		r.buf.WriteString(testEventLine(r.i) + "\n")
	}
	n, err := r.buf.Read(p)
	r.read += n
	return n, err
}

// TestCheckLinesStops: checkLines stops reading soon after a refused line,
// and when its context is cancelled, with no goroutine left.
func TestCheckLinesStops(t *testing.T) {
	const maxBytes = integrity.DefaultMaxEventBytes
	check := eventChecker("events.jsonl", maxBytes)
	t.Run("refused line", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &endlessEvents{limit: 64 << 20}
			bad := strings.NewReader(strings.Join(testEventLines(1000, map[int]string{999: "{"}), "\n") + "\n")
			_, err := checkLines(t.Context(), io.MultiReader(bad, r), maxBytes, 2, check)
			require.ErrorContains(t, err, "line 999: rule json")
			assert.Less(t, r.read, 4<<20, "read on after the refused line")
		})
	})
	t.Run("cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			r := &endlessEvents{limit: 64 << 20}
			_, err := checkLines(ctx, r, maxBytes, 2, func(line []byte, no int) error {
				if no == 5000 {
					cancel()
				}
				return check(line, no)
			})
			require.ErrorIs(t, err, context.Canceled)
			assert.Less(t, r.read, 4<<20, "read on after the cancel")
		})
	})
}

// BenchmarkCheckLines: pass 1 (hash and check every line) over 200,000
// events of about 300 bytes, one line after the other as it was, and with
// checkLines.
func BenchmarkCheckLines(b *testing.B) {
	const maxBytes = integrity.DefaultMaxEventBytes
	content := []byte(strings.Join(testEventLines(200000, nil), "\n") + "\n")
	check := eventChecker("events.jsonl", maxBytes)
	for _, bc := range []struct {
		name string
		pass func(r io.Reader) (int, error)
	}{
		{"sequential", func(r io.Reader) (int, error) { return checkLinesSequential(r, maxBytes, check) }},
		{fmt.Sprintf("checkLines/workers=%d", runtime.GOMAXPROCS(0)), func(r io.Reader) (int, error) {
			return checkLines(context.Background(), r, maxBytes, runtime.GOMAXPROCS(0), check)
		}},
		{"checkLines/workers=1", func(r io.Reader) (int, error) {
			return checkLines(context.Background(), r, maxBytes, 1, check)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(content)))
			for b.Loop() {
				h := sha256.New()
				n, err := bc.pass(io.TeeReader(bytes.NewReader(content), h))
				if err != nil || n != 200000 {
					b.Fatal(n, err)
				}
			}
		})
	}
}
