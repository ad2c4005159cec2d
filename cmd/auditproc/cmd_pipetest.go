package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/auditproc/auditproc/abi"
	"github.com/auditproc/auditproc/host"
	"github.com/auditproc/auditproc/internal/config"
)

// A pipeline test file (docs/pipeline-tests.md): the pipeline configuration
// it runs and the cases, each an input event and what must come out.
type pipelineTestFile struct {
	// Pipeline is the plugins.yaml to test, relative to the test file.
	Pipeline string             `yaml:"pipeline"`
	Cases    []pipelineTestCase `yaml:"cases"`
}

type pipelineTestCase struct {
	Name string `yaml:"name"`
	// Input is the event (a mapping) as a producer signs it.
	Input map[string]any `yaml:"input"`
	// Deliveries is the delivery count the plugins see; default 1.
	Deliveries uint32           `yaml:"deliveries"`
	Expect     pipelineExpected `yaml:"expect"`
	line       int
}

type pipelineExpected struct {
	// Verdict is ok, drop, reject or retry; default ok.
	Verdict string `yaml:"verdict"`
	// Event is the exact output event; EventContains only the fields named
	// (nested mappings compared the same way).
	Event         map[string]any `yaml:"event"`
	EventContains map[string]any `yaml:"event_contains"`
	// Emits lists, per sink, the events emitted to it, in order: the count
	// must match, and each listed event's fields must be in the emit.
	// A sink not named must receive nothing.
	Emits map[string][]map[string]any `yaml:"emits"`
	// Message is the exact message of the deciding plugin (a reject's
	// reason); MessageContains a part of it.
	Message         *string `yaml:"message"`
	MessageContains string  `yaml:"message_contains"`
	// Plugin is the plugin that decided a verdict other than ok.
	Plugin string `yaml:"plugin"`
}

func pipelineTestCommand() *command {
	var junit string
	return &command{
		name:    "test",
		summary: "run pipeline test files: input events against expected verdicts, output events, emits and messages",
		usage:   "[--junit FILE] TEST.yaml|DIR...",
		examples: `  auditproc test tests/pipeline/
  auditproc test tests/pipeline/default.yaml --junit build/pipeline-tests.xml

A test file names a pipeline configuration and lists cases:

  pipeline: ../../plugins.yaml
  cases:
    - name: a password is masked
      input: {event_id: e1, timestamp: "2026-01-01T00:00:00Z", actor: ann,
              action: user.update, outcome: success, password: hunter2}
      expect:
        verdict: ok
        event_contains: {password: "[REDACTED]"}
        emits: {archive: [{event_id: e1}]}

The pipeline runs offline, with exactly run's limits (each plugin's deadline
and memory cap from the configuration). A failing case prints what differs.
Exits 0 when every case passes, 1 when a case failed, 2 on a bad test file or
a pipeline that does not load. See docs/pipeline-tests.md.`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&junit, "junit", "", "also write the results as JUnit XML to `FILE`, for CI")
		},
		run: func(ctx context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) == 0 {
				return usagef("test needs at least one TEST.yaml or directory (see --help)")
			}
			files, err := pipelineTestFiles(args)
			if err != nil {
				return usageError{err}
			}
			var suites []junitSuite
			failed := 0
			for _, f := range files {
				suite, err := runPipelineTestFile(ctx, sio.out, f)
				if err != nil {
					return usageError{err}
				}
				failed += suite.Failures
				suites = append(suites, suite)
			}
			if junit != "" {
				if err := writeJUnit(junit, suites); err != nil {
					return err
				}
			}
			total := 0
			for _, s := range suites {
				total += s.Tests
			}
			fmt.Fprintf(sio.out, "\n%d cases, %d passed, %d failed\n", total, total-failed, failed)
			if failed > 0 {
				return errSilent
			}
			return nil
		},
	}
}

// pipelineTestFiles expands directories into their *.yaml and *.yml files.
func pipelineTestFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		var found []string
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(a, pat))
			found = append(found, m...)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s holds no *.yaml test file", a)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	return files, nil
}

func readPipelineTestFile(path string) (*pipelineTestFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %w", path, err)
	}
	var tf pipelineTestFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if tf.Pipeline == "" {
		return nil, fmt.Errorf("%s: pipeline: is required (the plugins.yaml to test, relative to this file)", path)
	}
	if len(tf.Cases) == 0 {
		return nil, fmt.Errorf("%s: cases: is empty", path)
	}
	// Each case's line, for messages.
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == "cases" {
				for j, c := range root.Content[i+1].Content {
					if j < len(tf.Cases) {
						tf.Cases[j].line = c.Line
					}
				}
			}
		}
	}
	var errs []error
	names := map[string]bool{}
	for i := range tf.Cases {
		c := &tf.Cases[i]
		where := fmt.Sprintf("%s:%d: cases[%d]", path, c.line, i)
		if c.Name == "" {
			c.Name = fmt.Sprintf("case %d", i+1)
		}
		if names[c.Name] {
			errs = append(errs, fmt.Errorf("%s: name %q is used twice", where, c.Name))
		}
		names[c.Name] = true
		if c.Input == nil {
			errs = append(errs, fmt.Errorf("%s (%s): input: is required, a mapping", where, c.Name))
		}
		if c.Deliveries == 0 {
			c.Deliveries = 1
		}
		if c.Expect.Verdict == "" {
			c.Expect.Verdict = "ok"
		}
		if _, ok := verdictByName(c.Expect.Verdict); !ok {
			errs = append(errs, fmt.Errorf("%s (%s): expect.verdict: %q is not ok, drop, reject or retry", where, c.Name, c.Expect.Verdict))
		}
		if c.Expect.Event != nil && c.Expect.EventContains != nil {
			errs = append(errs, fmt.Errorf("%s (%s): expect: give event or event_contains, not both", where, c.Name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &tf, nil
}

func verdictByName(name string) (abi.Verdict, bool) {
	for _, v := range []abi.Verdict{abi.VerdictOK, abi.VerdictDrop, abi.VerdictReject, abi.VerdictRetry} {
		if v.String() == name {
			return v, true
		}
	}
	return 0, false
}

// runPipelineTestFile loads the file's pipeline as run would and runs every
// case, printing one line per case and the differences of a failing one.
func runPipelineTestFile(ctx context.Context, w io.Writer, path string) (junitSuite, error) {
	suite := junitSuite{Name: path}
	tf, err := readPipelineTestFile(path)
	if err != nil {
		return suite, err
	}
	confPath := tf.Pipeline
	if !filepath.IsAbs(confPath) {
		confPath = filepath.Join(filepath.Dir(path), confPath)
	}
	// The file alone: the environment of the machine running the tests
	// must not change what they test.
	cfg, err := config.Load(config.Source{File: confPath})
	if err != nil {
		return suite, fmt.Errorf("%s: pipeline %s: %w", path, confPath, err)
	}
	pipeline, err := loadPipeline(ctx, &cfg, newLogger(io.Discard, "json", "error"))
	if err != nil {
		return suite, fmt.Errorf("%s: pipeline %s: %w", path, confPath, err)
	}
	defer pipeline.Close(context.WithoutCancel(ctx))
	// The cases run in order on one worker, as consecutive events on one
	// worker of run: a plugin that keeps state (detect counts failures)
	// sees them all.
	worker, err := pipeline.NewWorker(ctx)
	if err != nil {
		return suite, fmt.Errorf("%s: pipeline %s: %w", path, confPath, err)
	}
	defer worker.Release()
	fmt.Fprintf(w, "%s (pipeline %s)\n", path, confPath)
	for i, c := range tf.Cases {
		start := time.Now()
		diffs, err := runPipelineCase(ctx, worker, &cfg, i, c)
		if err != nil {
			return suite, fmt.Errorf("%s:%d: %s: %w", path, c.line, c.Name, err)
		}
		tc := junitCase{Name: c.Name, Classname: strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), Time: time.Since(start).Seconds()}
		suite.Tests++
		if len(diffs) == 0 {
			fmt.Fprintf(w, "  ok    %s\n", c.Name)
		} else {
			suite.Failures++
			fmt.Fprintf(w, "  FAIL  %s (%s:%d)\n", c.Name, path, c.line)
			for _, d := range diffs {
				fmt.Fprintf(w, "        %s\n", strings.ReplaceAll(d, "\n", "\n        "))
			}
			tc.Failure = &junitFailure{Message: "expectation not met", Text: strings.Join(diffs, "\n")}
		}
		suite.Cases = append(suite.Cases, tc)
	}
	return suite, nil
}

// runPipelineCase runs one case on the file's worker and returns what
// differs from the expectation.
func runPipelineCase(ctx context.Context, worker *host.Worker, cfg *config.Config, i int, c pipelineTestCase) ([]string, error) {
	data, err := json.Marshal(c.Input)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	eventID, _ := c.Input["event_id"].(string)
	res := worker.Process(ctx, host.Event{
		EntryID: fmt.Sprintf("%d-%d", time.Now().UnixMilli(), i), Stream: cfg.Stream.Name, KeyID: "test",
		EventID: eventID, Deliveries: c.Deliveries, Data: data,
	})
	var diffs []string
	want := c.Expect
	if got := res.Verdict.String(); got != want.Verdict {
		d := fmt.Sprintf("verdict: want %s, got %s", want.Verdict, got)
		if res.Plugin != "" {
			d += fmt.Sprintf(" from plugin %s", res.Plugin)
		}
		if res.Message != "" {
			d += fmt.Sprintf(" (message %q)", res.Message)
		}
		diffs = append(diffs, d)
	}
	if want.Plugin != "" && want.Plugin != res.Plugin {
		diffs = append(diffs, fmt.Sprintf("plugin: want %s, got %q", want.Plugin, res.Plugin))
	}
	if want.Message != nil && *want.Message != res.Message {
		diffs = append(diffs, fmt.Sprintf("message: want %q, got %q", *want.Message, res.Message))
	}
	if want.MessageContains != "" && !strings.Contains(res.Message, want.MessageContains) {
		diffs = append(diffs, fmt.Sprintf("message: want it to contain %q, got %q", want.MessageContains, res.Message))
	}
	if want.Event != nil || want.EventContains != nil {
		var got map[string]any
		if err := json.Unmarshal(res.Event, &got); err != nil {
			diffs = append(diffs, fmt.Sprintf("event: the output is not a JSON object: %v", err))
		} else if want.Event != nil {
			if d := jsonDiff("event", normalizeJSON(want.Event), got, true); len(d) > 0 {
				diffs = append(diffs, d...)
				diffs = append(diffs, "the output event was: "+string(res.Event))
			}
		} else if d := jsonDiff("event", normalizeJSON(want.EventContains), got, false); len(d) > 0 {
			diffs = append(diffs, d...)
			diffs = append(diffs, "the output event was: "+string(res.Event))
		}
	}
	if want.Emits != nil || want.Verdict == "ok" {
		gotEmits := map[string][]map[string]any{}
		for _, e := range res.Emits {
			var ev map[string]any
			_ = json.Unmarshal(e.Event, &ev)
			gotEmits[e.Sink] = append(gotEmits[e.Sink], ev)
		}
		if want.Emits != nil {
			sinks := map[string]bool{}
			for s := range want.Emits {
				sinks[s] = true
			}
			for s := range gotEmits {
				sinks[s] = true
			}
			for _, s := range slices.Sorted(func(yield func(string) bool) {
				for k := range sinks {
					if !yield(k) {
						return
					}
				}
			}) {
				we, ge := want.Emits[s], gotEmits[s]
				if len(we) != len(ge) {
					diffs = append(diffs, fmt.Sprintf("emits to %s: want %d, got %d", s, len(we), len(ge)))
					for _, e := range ge {
						b, _ := json.Marshal(e)
						diffs = append(diffs, fmt.Sprintf("  emitted to %s: %s", s, b))
					}
					continue
				}
				for j := range we {
					diffs = append(diffs, jsonDiff(fmt.Sprintf("emits.%s[%d]", s, j), normalizeJSON(we[j]), ge[j], false)...)
				}
			}
		}
	}
	return diffs, nil
}

// normalizeJSON gives a YAML-decoded value the types encoding/json decodes
// to (float64 numbers, map[string]any), so the two compare equal.
func normalizeJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// jsonDiff lists the differences between want and got below path. exact
// also reports fields got has and want lacks.
func jsonDiff(path string, want, got any, exact bool) []string {
	wm, wok := want.(map[string]any)
	gm, gok := got.(map[string]any)
	if wok && gok {
		var out []string
		for _, k := range slices.Sorted(mapKeys(wm)) {
			gv, ok := gm[k]
			if !ok {
				out = append(out, fmt.Sprintf("%s.%s: want %s, missing", path, k, jsonText(wm[k])))
				continue
			}
			out = append(out, jsonDiff(path+"."+k, wm[k], gv, exact)...)
		}
		if exact {
			for _, k := range slices.Sorted(mapKeys(gm)) {
				if _, ok := wm[k]; !ok {
					out = append(out, fmt.Sprintf("%s.%s: not expected, got %s", path, k, jsonText(gm[k])))
				}
			}
		}
		return out
	}
	if reflect.DeepEqual(want, got) {
		return nil
	}
	return []string{fmt.Sprintf("%s: want %s, got %s", path, jsonText(want), jsonText(got))}
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// JUnit XML, as CI systems read it.
type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      float64       `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func writeJUnit(path string, suites []junitSuite) error {
	b, err := xml.MarshalIndent(junitSuites{Suites: suites}, "", "  ")
	if err != nil {
		return err
	}
	b = append([]byte(xml.Header), append(b, '\n')...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("--junit: %w", err)
	}
	return nil
}
