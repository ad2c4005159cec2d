package hosttest

import (
	"maps"
	"slices"
)

// Events returns realistic audit events (JSON object texts), the batch the
// conformance suite runs every plugin through: logins, data access,
// permission and configuration changes, payments and messages with personal
// data, from several services, with the fields example plugins look at.
func Events() []string {
	return []string{
		`{"event_id":"evt-0001","timestamp":"2024-05-01T12:00:00Z","service":"auth","event_type":"login","action":"login","outcome":"success","severity":"info","user":"alice","email":"alice@example.com","ip":"192.0.2.10","user_agent":"Mozilla/5.0"}`,
		`{"event_id":"evt-0002","timestamp":"2024-05-01T12:00:01Z","service":"auth","event_type":"login","action":"login","outcome":"failure","severity":"warning","user":"bob","email":"bob@example.org","ip":"198.51.100.7","reason":"bad password","password":"hunter2"}`,
		`{"event_id":"evt-0003","timestamp":"2024-05-01T12:00:02Z","service":"auth","event_type":"login","action":"login","outcome":"failure","severity":"warning","user":"bob","email":"bob@example.org","ip":"198.51.100.7","reason":"bad password"}`,
		`{"event_id":"evt-0004","timestamp":"2024-05-01T12:00:03Z","service":"files","event_type":"data_access","action":"read","outcome":"success","severity":"info","user":"carol","resource":{"type":"document","id":"doc-42","path":"/finance/q1.xlsx"},"bytes":18234}`,
		`{"event_id":"evt-0005","timestamp":"2024-05-01T12:00:04Z","service":"iam","event_type":"permission_change","action":"grant","outcome":"success","severity":"high","user":"dave","target":{"user":"erin","role":"admin"},"approved_by":null}`,
		`{"event_id":"evt-0006","timestamp":"2024-05-01T12:00:05Z","service":"billing","event_type":"payment","action":"charge","outcome":"success","severity":"info","user":"frank","amount":{"value":129.99,"currency":"EUR"},"card_number":"4111 1111 1111 1111","card":{"number":"5500005555555559","expiry":"12/27"},"ssn":"123-45-6789","phone":"+1-202-555-0173"}`,
		`{"event_id":"evt-0007","timestamp":"2024-05-01T12:00:06Z","service":"config","event_type":"config_change","action":"update","outcome":"success","severity":"medium","user":"grace","changes":[{"key":"max_sessions","old":5,"new":10},{"key":"mfa_required","old":true,"new":false}]}`,
		`{"event_id":"evt-0008","timestamp":"2024-05-01T12:00:07Z","service":"healthcheck","event_type":"heartbeat","action":"ping","outcome":"success","severity":"debug","user":"system"}`,
		`{"event_id":"evt-0009","timestamp":"2024-05-01T12:00:08Z","service":"support","event_type":"message","action":"send","outcome":"success","severity":"info","user":"heidi","email":"heidi@example.net","message":"Please call me on +44 20 7946 0958 or mail heidi.private@example.com","tags":["customer","priority"]}`,
		`{"event_id":"evt-0010","timestamp":"2024-05-01T12:00:09Z","service":"auth","event_type":"logout","action":"logout","outcome":"success","severity":"info","user":"alice","session":{"id":"s-9f8e","duration_s":3600,"mfa":true}}`,
		`{"event_id":"evt-0011","timestamp":"2024-05-01T12:00:10Z","service":"admin","event_type":"user_delete","action":"delete","outcome":"denied","severity":"critical","user":"mallory","target":{"user":"root"},"ip":"203.0.113.99","geo":{"country":"ZZ","lat":0.0,"lon":-0.0}}`,
		`{"event_id":"evt-0012","action":"export","user":"ivan"}`,
		`{"event_id":"evt-0013","timestamp":1714564811,"service":"legacy","event_type":"LOGIN","outcome":"SUCCESS","user":{"name":"judy","id":7},"extra":{"a":[1,2,{"b":[true,false,null]}],"empty":{},"list":[]}}`,
		`{"event_id":"evt-0014","timestamp":"2024-05-01T12:00:12Z","service":"api","event_type":"api_call","action":"call","outcome":"error","severity":"error","user":"ken","request":{"method":"POST","path":"/v1/users","headers":{"authorization":"Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"},"body_bytes":512},"status":500,"latency_ms":1234.5}`,
	}
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
