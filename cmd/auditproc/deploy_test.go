package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yamlv3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/auditproc/auditproc/internal/config"
	"github.com/auditproc/auditproc/internal/processor"
	"github.com/auditproc/auditproc/internal/wasmtest"
)

// exportedMetrics is every metric name `run` exports: its registry as run
// builds it, described (histograms with their _bucket, _sum and _count
// series).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	m := processor.NewMetrics()
	registerBuildInfo(m.Registry)
	registerReloadMetrics(m.Registry)
	m.WatchPlugins(nil)
	ch := make(chan *prometheus.Desc, 1024)
	go func() { m.Registry.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range ch {
		if sm := fq.FindStringSubmatch(d.String()); sm != nil {
			for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
				names[sm[1]+suffix] = true
			}
		}
	}
	require.True(t, names["auditproc_build_info"])
	require.True(t, names["auditproc_plugin_instance_restarts_total"])
	return names
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "offset": true, "bool": true, "by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// promqlMetrics returns the metric names a PromQL expression selects.
func promqlMetrics(expr string) []string {
	e := promqlStrings.ReplaceAllString(expr, `""`)
	e = promqlMatchers.ReplaceAllString(e, " ")
	e = promqlRanges.ReplaceAllString(e, " ")
	e = promqlGrouping.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range promqlIdent.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promqlKeywords[strings.ToLower(name)] {
			continue // a function or an operator
		}
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // a unit of a number such as 1e3
		}
		out = append(out, name)
	}
	return out
}

func TestPromqlMetrics(t *testing.T) {
	got := promqlMetrics(`histogram_quantile(0.99, sum by (plugin, le) (rate(auditproc_plugin_duration_seconds_bucket{job=~"$job", x="a{b}"}[$__rate_interval]))) > 1e3 and on (job) up or vector(1)`)
	assert.Equal(t, []string{"auditproc_plugin_duration_seconds_bucket", "up"}, got)
}

// TestDashboardQueriesKnownMetrics: every query of the Grafana dashboard
// names only metrics auditproc exports, and the dashboard shows the lag,
// the rates, the verdicts and the plugin latency.
func TestDashboardQueriesKnownMetrics(t *testing.T) {
	known := exportedMetrics(t)
	data, err := os.ReadFile(filepath.Join(wasmtest.Root(t), "deploy", "grafana", "auditproc.json"))
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	require.NotEmpty(t, dash.Panels)
	var exprs []string
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has a query", p.Title)
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, "panel %q", p.Title)
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok && strings.HasPrefix(q, "label_values(") {
			exprs = append(exprs, strings.TrimSuffix(strings.SplitN(strings.TrimPrefix(q, "label_values("), ",", 2)[0], ")"))
		}
	}
	used := map[string]bool{}
	for _, e := range exprs {
		names := promqlMetrics(e)
		require.NotEmpty(t, names, "query %q names a metric", e)
		for _, n := range names {
			assert.True(t, known[n], "query %q names %s, which auditproc does not export", e, n)
			used[n] = true
		}
	}
	for _, want := range []string{"auditproc_consumer_group_lag", "auditproc_entries_read_total", "auditproc_entries_acked_total",
		"auditproc_pending_entries", "auditproc_entries_dead_lettered_total", "auditproc_plugin_verdicts_total",
		"auditproc_plugin_duration_seconds_bucket", "auditproc_ready"} {
		assert.True(t, used[want], "the dashboard shows %s", want)
	}
}

// TestAlertRules checks deploy/prometheus/alerts.yaml with promtool (check
// rules, then its unit tests in alerts_test.yaml), and that every rule names
// only metrics auditproc exports.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		skipOrFail(t, "promtool is needed (Debian: apt-get install prometheus; scripts/deps.sh installs it)")
	}
	dir := filepath.Join(wasmtest.Root(t), "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	}

	known := exportedMetrics(t)
	data, err := os.ReadFile(filepath.Join(dir, "alerts.yaml"))
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yamlv3.Unmarshal(data, &rules))
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			for _, n := range promqlMetrics(r.Expr) {
				assert.True(t, known[n], "alert %s names %s, which auditproc does not export", r.Alert, n)
			}
		}
	}
	for _, want := range []string{"AuditprocLagGrowing", "AuditprocDeadLettersGrowing", "AuditprocTamperedEntries",
		"AuditprocSequenceGap", "AuditprocNotReady", "AuditprocPluginRestarts"} {
		assert.True(t, alerts[want], "alerts.yaml has %s", want)
	}
}

// skipOrFail skips, or fails under AUDITPROC_NO_SKIP=1 (CI).
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("AUDITPROC_NO_SKIP") == "1" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// decodeStrict decodes one YAML document into v with the Kubernetes API
// types' JSON names; a field the type does not have is an error.
func decodeStrict(doc []byte, v any) error {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// TestKubernetesManifests decodes every manifest of deploy/kubernetes
// strictly with the Kubernetes API types and checks what the deployment
// promises: probes, a grace period above consumer.shutdown_timeout, a
// PodDisruptionBudget that selects the pods, the keyring from a Secret,
// plugins.yaml from a ConfigMap that is a valid configuration, and a
// kustomization naming every file.
func TestKubernetesManifests(t *testing.T) {
	dir := filepath.Join(wasmtest.Root(t), "deploy", "kubernetes")

	var kust struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Labels     []struct {
			Pairs map[string]string `json:"pairs"`
		} `json:"labels"`
		Resources          []string `json:"resources"`
		ConfigMapGenerator []struct {
			Name  string   `json:"name"`
			Files []string `json:"files"`
		} `json:"configMapGenerator"`
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	require.NoError(t, decodeStrict(data, &kust))
	assert.Equal(t, "Kustomization", kust.Kind)
	require.Len(t, kust.ConfigMapGenerator, 1)

	var (
		deploy *appsv1.Deployment
		pdb    *policyv1.PodDisruptionBudget
		svc    *corev1.Service
	)
	for _, res := range kust.Resources {
		data, err := os.ReadFile(filepath.Join(dir, res))
		require.NoError(t, err)
		dec := yamlv3.NewDecoder(bytes.NewReader(data))
		for {
			var node yamlv3.Node
			if err := dec.Decode(&node); errors.Is(err, io.EOF) {
				break
			} else {
				require.NoError(t, err, res)
			}
			doc, err := yamlv3.Marshal(&node)
			require.NoError(t, err)
			var head struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
			}
			require.NoError(t, yamlv3.Unmarshal(doc, &head))
			switch head.APIVersion + "/" + head.Kind {
			case "apps/v1/Deployment":
				deploy = &appsv1.Deployment{}
				require.NoError(t, decodeStrict(doc, deploy), res)
			case "policy/v1/PodDisruptionBudget":
				pdb = &policyv1.PodDisruptionBudget{}
				require.NoError(t, decodeStrict(doc, pdb), res)
			case "v1/Service":
				svc = &corev1.Service{}
				require.NoError(t, decodeStrict(doc, svc), res)
			default:
				t.Fatalf("%s: unexpected %s %s", res, head.APIVersion, head.Kind)
			}
		}
	}
	require.NotNil(t, deploy, "a Deployment")
	require.NotNil(t, pdb, "a PodDisruptionBudget")
	require.NotNil(t, svc, "a metrics Service")

	// The pipeline from the ConfigMap is a valid configuration.
	cm := kust.ConfigMapGenerator[0]
	require.Equal(t, []string{"plugins.yaml"}, cm.Files)
	cfg, err := config.Load(config.Source{File: filepath.Join(dir, "plugins.yaml")})
	require.NoError(t, err, "the ConfigMap's plugins.yaml is a valid configuration")

	pod := deploy.Spec.Template
	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		require.NotNil(t, p, "a %s probe", name)
		require.NotNil(t, p.HTTPGet, "the %s probe asks over HTTP", name)
	}
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.NotNil(t, pod.Spec.TerminationGracePeriodSeconds)
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	assert.Greater(t, grace, cfg.Consumer.ShutdownTimeout, "the grace period is above consumer.shutdown_timeout")

	// The probes' port is the metrics port of the configuration.
	require.Len(t, c.Ports, 1)
	assert.Equal(t, c.Ports[0].Name, c.LivenessProbe.HTTPGet.Port.String())
	assert.True(t, strings.HasSuffix(cfg.Metrics.Address, fmt.Sprintf(":%d", c.Ports[0].ContainerPort)), cfg.Metrics.Address)

	// plugins.yaml from the ConfigMap, the keyring from a Secret.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	require.NotNil(t, volumes["config"].ConfigMap)
	assert.Equal(t, cm.Name, volumes["config"].ConfigMap.Name)
	assert.Equal(t, env["AUDITPROC_CONFIG"].Value, mounts["config"].MountPath)
	require.NotNil(t, volumes["keys"].Secret, "the keyring comes from a Secret")
	assert.True(t, strings.HasPrefix(env["AUDITPROC_HMAC_KEYS_FILE"].Value, mounts["keys"].MountPath+"/"))
	for _, e := range c.Env {
		assert.True(t, config.KnownVariable(e.Name), "%s is a variable auditproc reads", e.Name)
	}

	// The PodDisruptionBudget and the Service select the Deployment's pods.
	for what, sel := range map[string]map[string]string{"pdb": pdb.Spec.Selector.MatchLabels, "deployment": deploy.Spec.Selector.MatchLabels, "service": svc.Spec.Selector} {
		require.NotEmpty(t, sel, what)
		for k, v := range sel {
			assert.Equal(t, v, pod.Labels[k], "the %s selects the pods by %s", what, k)
		}
	}
	require.NotNil(t, pdb.Spec.MaxUnavailable)
	var keys []string
	for k := range kust.Labels[0].Pairs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	assert.Contains(t, keys, "app.kubernetes.io/name")
}
