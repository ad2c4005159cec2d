// Command detect is an auditproc plugin that watches the event flow for
// two signs of an attack and emits an alert event to a sink for each:
//
//   - failed_logins: threshold failed logins by one actor within a window;
//   - privilege_change: a successful action that changes privileges
//     (granting a role, adding a group member…).
//
// Every event goes on unchanged (ok). The login windows are state kept in
// the plugin instance, bounded by max_actors; see README.md for what that
// state can and cannot see.
package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/auditproc/auditproc/abi/guest"
)

type config struct {
	Sink             string   // sink
	LoginActions     []string // login_actions
	FailureOutcomes  []string // failure_outcomes
	Threshold        int      // threshold
	Window           string   // window
	MaxActors        int      // max_actors
	PrivilegeActions []string // privilege_actions
}

// decodeConfig reads the configuration's JSON text over c; unknown keys are
// an error.
func decodeConfig(b []byte, c *config) error {
	v, err := guest.ParseConfig(b)
	if err != nil {
		return err
	}
	return v.Object(func(name string, v guest.Value) error {
		switch name {
		case "sink":
			return v.StringTo(&c.Sink)
		case "login_actions":
			return v.Strings(&c.LoginActions)
		case "failure_outcomes":
			return v.Strings(&c.FailureOutcomes)
		case "threshold":
			return v.Int(&c.Threshold)
		case "window":
			return v.StringTo(&c.Window)
		case "max_actors":
			return v.Int(&c.MaxActors)
		case "privilege_actions":
			return v.Strings(&c.PrivilegeActions)
		}
		return guest.UnknownField(name)
	})
}

var defaults = config{
	Sink:             "alerts",
	LoginActions:     []string{"user.login", "auth.login", "login"},
	FailureOutcomes:  []string{"failure", "denied"},
	Threshold:        5,
	Window:           "5m",
	MaxActors:        10000,
	PrivilegeActions: []string{"role.grant", "role.assign", "user.role.add", "group.member.add", "privilege.*", "sudo.*"},
}

// detector is the instance's state: the configuration and one window of
// recent failures per actor, the least recently failing actor evicted first
// when max_actors are tracked.
type detector struct {
	sink             string
	loginActions     []string
	failureOutcomes  []string
	threshold        int
	window           time.Duration
	maxActors        int
	privilegeActions []string

	actors map[string]*actor
	// lru is a list of the tracked actors, most recently failing first.
	lru actor
	// latest is the newest event time seen; events without a readable
	// timestamp are placed at it.
	latest time.Time
	alert  []byte
}

type actor struct {
	name       string
	prev, next *actor
	// failures in the window, oldest first; at most threshold of them.
	times    []time.Time
	eventIDs []string
	ips      []string
	// The last alert about this actor and the event that raised it, sent
	// again when that event is delivered again: the first emit was
	// discarded if the pipeline did not end in ok.
	alert        []byte
	alertEventID string
}

var d detector

func parseConfig(b []byte) (detector, error) {
	c := defaults
	if err := decodeConfig(b, &c); err != nil {
		return detector{}, errors.New("detect: config: " + err.Error())
	}
	if c.Sink == "" {
		return detector{}, errors.New("detect: config: sink is empty: name a sink granted to this plugin in plugins.yaml")
	}
	if c.Threshold < 1 || c.Threshold > 1000 {
		return detector{}, errors.New("detect: config: threshold " + strconv.Itoa(c.Threshold) + ": want 1 to 1000")
	}
	window, err := time.ParseDuration(c.Window)
	if err != nil || window <= 0 {
		return detector{}, errors.New("detect: config: window " + strconv.Quote(c.Window) + ": want a positive duration such as 5m")
	}
	if c.MaxActors < 1 || c.MaxActors > 1_000_000 {
		return detector{}, errors.New("detect: config: max_actors " + strconv.Itoa(c.MaxActors) + ": want 1 to 1000000")
	}
	out := detector{
		sink: c.Sink, loginActions: c.LoginActions, failureOutcomes: c.FailureOutcomes,
		threshold: c.Threshold, window: window, maxActors: c.MaxActors, privilegeActions: c.PrivilegeActions,
		actors: make(map[string]*actor),
	}
	return out, nil
}

// matchAny reports whether s equals one of patterns; a pattern ending in
// "*" matches any string with that prefix.
func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(s, prefix) {
				return true
			}
		} else if p == s {
			return true
		}
	}
	return false
}

func (d *detector) handle(ev *guest.Event) guest.Verdict {
	action, _ := ev.GetString("action")
	outcome, _ := ev.GetString("outcome")
	isLogin := matchAny(d.loginActions, action)
	isPrivilege := !isLogin && outcome == "success" && matchAny(d.privilegeActions, action)
	if !isLogin && !isPrivilege {
		return guest.OK
	}
	name, ok := ev.GetString("actor")
	if !ok || name == "" {
		return guest.OK
	}
	at := d.eventTime(ev)
	eventID, _ := ev.GetString("event_id")
	if isPrivilege {
		target, _ := ev.Get("target")
		d.alert = d.alert[:0]
		d.alert = append(d.alert, `{"alert":"privilege_change","severity":"high","actor":`...)
		d.alert = guest.AppendQuote(d.alert, name)
		d.alert = append(d.alert, `,"action":`...)
		d.alert = guest.AppendQuote(d.alert, action)
		if target != nil {
			d.alert = append(d.alert, `,"target":`...)
			d.alert = append(d.alert, target...)
		}
		d.alert = append(d.alert, `,"timestamp":`...)
		d.alert = guest.AppendQuote(d.alert, at.Format(time.RFC3339Nano))
		d.alert = append(d.alert, `,"event_id":`...)
		d.alert = guest.AppendQuote(d.alert, eventID)
		d.alert = append(d.alert, `,"entry_id":`...)
		d.alert = guest.AppendQuote(d.alert, ev.EntryID())
		d.alert = append(d.alert, '}')
		return d.emit(ev)
	}
	if !matchAny(d.failureOutcomes, outcome) {
		return guest.OK
	}
	a := d.track(name)
	// The same event delivered again (a redelivery, or a retry caused by
	// a later plugin) must not count twice.
	if eventID != "" && eventID == a.alertEventID {
		d.alert = append(d.alert[:0], a.alert...)
		return d.emit(ev)
	}
	if eventID != "" && indexOf(a.eventIDs, eventID) >= 0 {
		return guest.OK
	}
	ip, _ := ev.GetString("source_ip")
	a.add(at, eventID, ip, d.threshold)
	a.expire(a.times[len(a.times)-1].Add(-d.window))
	if len(a.times) < d.threshold {
		return guest.OK
	}
	d.alert = d.alert[:0]
	d.alert = append(d.alert, `{"alert":"failed_logins","severity":"high","actor":`...)
	d.alert = guest.AppendQuote(d.alert, name)
	d.alert = append(d.alert, `,"count":`...)
	d.alert = strconv.AppendInt(d.alert, int64(len(a.times)), 10)
	d.alert = append(d.alert, `,"window_seconds":`...)
	d.alert = strconv.AppendInt(d.alert, int64(d.window/time.Second), 10)
	d.alert = append(d.alert, `,"first_timestamp":`...)
	d.alert = guest.AppendQuote(d.alert, a.times[0].Format(time.RFC3339Nano))
	d.alert = append(d.alert, `,"last_timestamp":`...)
	d.alert = guest.AppendQuote(d.alert, a.times[len(a.times)-1].Format(time.RFC3339Nano))
	d.alert = append(d.alert, `,"source_ips":[`...)
	seen := 0
	for i, ip := range a.ips {
		if ip == "" || indexOf(a.ips[:i], ip) >= 0 {
			continue
		}
		if seen > 0 {
			d.alert = append(d.alert, ',')
		}
		d.alert = guest.AppendQuote(d.alert, ip)
		seen++
	}
	d.alert = append(d.alert, `],"event_ids":[`...)
	for i, id := range a.eventIDs {
		if i > 0 {
			d.alert = append(d.alert, ',')
		}
		d.alert = guest.AppendQuote(d.alert, id)
	}
	d.alert = append(d.alert, `],"entry_id":`...)
	d.alert = guest.AppendQuote(d.alert, ev.EntryID())
	d.alert = append(d.alert, '}')
	// One alert per burst: the window starts again empty.
	a.times, a.eventIDs, a.ips = a.times[:0], a.eventIDs[:0], a.ips[:0]
	a.alert = append(a.alert[:0], d.alert...)
	a.alertEventID = eventID
	return d.emit(ev)
}

func (d *detector) emit(ev *guest.Event) guest.Verdict {
	if err := ev.Emit(d.sink, d.alert); err != nil {
		// Losing an alert is worse than delaying the event: leave it
		// pending until the sink is granted or the limit raised.
		return guest.Retry("detect: emit to sink " + d.sink + ": " + err.Error())
	}
	return guest.OK
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// eventTime is the event's timestamp, or the newest one seen when it has
// none: the sandbox has no wall clock, and event time makes the window the
// same on a replay.
func (d *detector) eventTime(ev *guest.Event) time.Time {
	if s, ok := ev.GetString("timestamp"); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			if t.After(d.latest) {
				d.latest = t
			}
			return t
		}
	}
	return d.latest
}

// track returns the state of the actor name, most recently used from now,
// evicting the least recently failing actor when max_actors are tracked.
func (d *detector) track(name string) *actor {
	a := d.actors[name]
	if a == nil {
		if len(d.actors) >= d.maxActors {
			old := d.lru.prev
			old.unlink()
			delete(d.actors, old.name)
		}
		a = &actor{name: name}
		d.actors[name] = a
	} else {
		a.unlink()
	}
	a.next, a.prev = d.lru.next, &d.lru
	d.lru.next.prev = a
	d.lru.next = a
	return a
}

func (a *actor) unlink() {
	a.prev.next, a.next.prev = a.next, a.prev
}

// add records a failure, keeping the newest threshold ones in time order.
func (a *actor) add(t time.Time, eventID, ip string, threshold int) {
	i := len(a.times)
	for i > 0 && a.times[i-1].After(t) {
		i--
	}
	a.times = insertAt(a.times, i, t)
	a.eventIDs = insertAt(a.eventIDs, i, eventID)
	a.ips = insertAt(a.ips, i, ip)
	if over := len(a.times) - threshold; over > 0 {
		a.times = a.times[over:]
		a.eventIDs = a.eventIDs[over:]
		a.ips = a.ips[over:]
	}
}

// expire forgets failures before since.
func (a *actor) expire(since time.Time) {
	n := 0
	for n < len(a.times) && a.times[n].Before(since) {
		n++
	}
	a.times, a.eventIDs, a.ips = a.times[n:], a.eventIDs[n:], a.ips[n:]
}

func insertAt[T any](s []T, i int, v T) []T {
	var zero T
	s = append(s, zero)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

func init() {
	guest.Init(func(config []byte) error {
		var err error
		d, err = parseConfig(config)
		// The list head points at itself, so it is set where it lives.
		d.lru.next, d.lru.prev = &d.lru, &d.lru
		return err
	})
	guest.Handle(func(ev *guest.Event) guest.Verdict { return d.handle(ev) })
}

func main() {}
