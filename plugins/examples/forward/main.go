// Command forward is an auditproc plugin that sends the event, as the
// plugins before it left it (validated, filtered, redacted), to a sink: the
// processed audit trail for a SIEM, an archive or another team's stream.
//
// Configuration: {"sink": "archive"} — the sink must be granted to the
// plugin in plugins.yaml. Put it last in the pipeline. With a stream sink
// the copy is committed in the same atomic step as the ack, so each entry is
// forwarded exactly once.
package main

import (
	"errors"

	"github.com/auditproc/auditproc/abi/guest"
)

var sink string

func init() {
	guest.Init(func(config []byte) error {
		v, err := guest.ParseConfig(config)
		if err == nil {
			err = v.Object(func(name string, v guest.Value) error {
				if name == "sink" {
					return v.StringTo(&sink)
				}
				return nil // other keys are ignored
			})
		}
		if err != nil {
			return errors.New("forward: config: " + err.Error())
		}
		if sink == "" {
			return errors.New(`forward: config: "sink" is required: the name of a sink granted to this plugin`)
		}
		return nil
	})
	guest.Handle(func(ev *guest.Event) guest.Verdict {
		if err := ev.Emit(sink, ev.Bytes()); err != nil {
			return guest.Retry("forward to sink " + sink + ": " + err.Error())
		}
		return guest.OK
	})
}

func main() {}
