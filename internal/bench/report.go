package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Print writes the report as a table (Markdown, so that it pastes into
// docs/performance.md as it is).
func (rep *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "%d entries of %d bytes (event JSON) per scenario, best of %d rounds; latency at %d entries/s offered\n\n",
		rep.Entries, rep.EventBytes, rep.Rounds, rep.Rate)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| scenario\t| entries/s\t| × baseline\t| CPU µs/entry\t| Redis CPU µs/entry\t| peak RSS MiB\t| start ms\t| p50 / p99 ms\t|")
	fmt.Fprintln(tw, "|---\t|---:\t|---:\t|---:\t|---:\t|---:\t|---:\t|---:\t|")
	for _, r := range rep.Results {
		lat := "—"
		if r.Latency {
			lat = fmt.Sprintf("%d / %d", r.P50.Milliseconds(), r.P99.Milliseconds())
		}
		rcpu := "—"
		if r.RedisCPU > 0 {
			rcpu = us(r.RedisCPU)
		}
		fmt.Fprintf(tw, "| %s\t| %.0fk\t| %.2f\t| %s\t| %s\t| %.0f\t| %d\t| %s\t|\n",
			r.Title, r.Throughput/1000, r.Ratio, us(r.CPU), rcpu, float64(r.PeakRSS)/(1<<20), r.Start.Milliseconds(), lat)
	}
	_ = tw.Flush()
	if len(rep.Trail) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "| trail: v2 cost and verify\t| entries/s\t| ratio\t|")
	fmt.Fprintln(tw, "|---\t|---:\t|---:\t|")
	for _, t := range rep.Trail {
		fmt.Fprintf(tw, "| %s\t| %.0fk\t| %.2f × %s\t|\n", t.Title, t.Rate/1000, t.Ratio, t.Of)
	}
	_ = tw.Flush()
}

func us(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Nanoseconds())/1000) }
