package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Print writes the report as tables (Markdown, so that they paste into
// docs/performance.md as they are): the consumer scenarios, then the
// producer scenarios.
func (rep *Report) Print(w io.Writer) {
	var drains, produces, cluster []Result
	for _, r := range rep.Results {
		if r.Shards > 0 {
			cluster = append(cluster, r)
			continue
		}
		if r.Producer {
			produces = append(produces, r)
		} else {
			drains = append(drains, r)
		}
	}
	if len(drains) > 0 {
		fmt.Fprintf(w, "%d entries of %d bytes (event JSON) per scenario, best of %d rounds; latency at %d entries/s offered\n\n",
			rep.Entries, rep.EventBytes, rep.Rounds, rep.Rate)
		// The destination's CPU is a column when a scenario has one (an
		// external sink's server).
		dest := false
		for _, r := range drains {
			dest = dest || r.DestCPU > 0
		}
		destHead, destSep := "", ""
		if dest {
			destHead, destSep = "\t| sink server CPU µs/entry", "\t|---:"
		}
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprintln(tw, "| scenario\t| entries/s\t| × baseline\t| CPU µs/entry\t| Redis CPU µs/entry"+destHead+"\t| peak RSS MiB\t| start ms\t| p50 / p99 ms\t|")
		fmt.Fprintln(tw, "|---\t|---:\t|---:\t|---:\t|---:"+destSep+"\t|---:\t|---:\t|---:\t|")
		for _, r := range drains {
			destCol := ""
			if dest {
				destCol = "\t| —"
				if r.DestCPU > 0 {
					destCol = "\t| " + us(r.DestCPU)
				}
			}
			if r.Missing != "" {
				fmt.Fprintf(tw, "| %s\t| —\t| —\t| —\t| —%s\t| —\t| —\t| —\t|\n", r.Title, destCol)
				continue
			}
			lat := "—"
			if r.Latency {
				lat = fmt.Sprintf("%d / %d", r.P50.Milliseconds(), r.P99.Milliseconds())
			}
			fmt.Fprintf(tw, "| %s\t| %.0fk\t| %.2f\t| %s\t| %s%s\t| %.0f\t| %d\t| %s\t|\n",
				r.Title, r.Throughput/1000, r.Ratio, us(r.CPU), redisCPU(r), destCol, float64(r.PeakRSS)/(1<<20), r.Start.Milliseconds(), lat)
		}
		_ = tw.Flush()
	}
	if len(produces) > 0 {
		if len(drains) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "producers: %d events of %d bytes (before event_id and timestamp) appended per scenario, best of %d rounds, "+
			"from the process's start to its exit\n\n", rep.Entries, rep.ProduceEventBytes, rep.Rounds)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprintln(tw, "| scenario\t| events/s\t| × raw XADD\t| × raw v2 XADD\t| CPU µs/event\t| Redis CPU µs/event\t| peak RSS MiB\t|")
		fmt.Fprintln(tw, "|---\t|---:\t|---:\t|---:\t|---:\t|---:\t|---:\t|")
		for _, r := range produces {
			v2 := "—"
			if r.RatioV2 > 0 {
				v2 = fmt.Sprintf("%.2f", r.RatioV2)
			}
			fmt.Fprintf(tw, "| %s\t| %.0fk\t| %.2f\t| %s\t| %s\t| %s\t| %.0f\t|\n",
				r.Title, r.Throughput/1000, r.Ratio, v2, us(r.CPU), redisCPU(r), float64(r.PeakRSS)/(1<<20))
		}
		_ = tw.Flush()
	}
	if len(cluster) > 0 {
		fmt.Fprintln(w)
		rep.printCluster(w, cluster)
	}
	if len(rep.Memory) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprintln(tw, "| Redis memory per retained entry (INFO MEMORY used_memory after − before the prefill, over the entries)\t| bytes/entry\t|")
		fmt.Fprintln(tw, "|---\t|---:\t|")
		for _, m := range rep.Memory {
			fmt.Fprintf(tw, "| %d entries, %s\t| %.0f\t|\n", m.Entries, m.Title, m.Bytes)
		}
		_ = tw.Flush()
	}
	if len(rep.Trail) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprintln(tw, "| trail: envelope v2 cost, verify\t| entries/s\t| ratio\t|")
		fmt.Fprintln(tw, "|---\t|---:\t|---:\t|")
		for _, t := range rep.Trail {
			fmt.Fprintf(tw, "| %s\t| %.0fk\t| %.2f × %s\t|\n", t.Title, t.Rate/1000, t.Ratio, t.Of)
		}
		_ = tw.Flush()
	}
}

// printCluster writes the cluster rows, each group after the standalone
// row it is compared with (when the run had it).
func (rep *Report) printCluster(w io.Writer, rows []Result) {
	fmt.Fprintf(w, "cluster: %d masters on loopback (no replicas, no persistence), %d entries or events per scenario "+
		"in 1 or %d shards, best of %d rounds, taking turns with the standalone scenarios; Redis CPU from each node's INFO CPU\n",
		ClusterMasters, rep.Entries, ClusterMasters, rep.Rounds)
	for _, c := range rep.Cluster {
		fmt.Fprintf(w, "  %s\n", c)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| scenario\t| shards\t| entries/s\t| × standalone\t| CPU µs/entry\t| Redis CPU µs/entry, all nodes\t| per node\t| peak RSS MiB\t|")
	fmt.Fprintln(tw, "|---\t|---:\t|---:\t|---:\t|---:\t|---:\t|---:\t|---:\t|")
	row := func(r Result, title, shards, ratio string) {
		nodes := make([]string, len(r.NodeCPU))
		for i, d := range r.NodeCPU {
			nodes[i] = us(d)
		}
		perNode := strings.Join(nodes, " / ")
		if perNode == "" {
			perNode = "—"
		}
		fmt.Fprintf(tw, "| %s\t| %s\t| %.0fk\t| %s\t| %s\t| %s\t| %s\t| %.0f\t|\n",
			title, shards, r.Throughput/1000, ratio, us(r.CPU), redisCPU(r), perNode, float64(r.PeakRSS)/(1<<20))
	}
	shown := map[string]bool{}
	for _, r := range rows {
		if !shown[r.Of] {
			shown[r.Of] = true
			for _, s := range rep.Results {
				if s.Name == r.Of && s.Shards == 0 && s.Throughput > 0 {
					row(s, s.Title+" — standalone Redis", "—", "1.00")
				}
			}
		}
		ratio := "—"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		row(r, r.Title, fmt.Sprint(r.Shards), ratio)
	}
	_ = tw.Flush()
}

func redisCPU(r Result) string {
	if r.RedisCPU > 0 {
		return us(r.RedisCPU)
	}
	return "—"
}

func us(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Nanoseconds())/1000) }
