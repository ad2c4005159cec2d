package hosttest

import (
	"maps"
	"slices"
)

// Events returns realistic audit events (JSON object texts), the batch the
// conformance suite runs every plugin through: logins (successful and
// failed), data access, privilege and configuration changes, payments and
// messages carrying personal data and secrets, in the documented event shape
// (event_id, timestamp, actor, action, target, outcome, severity, source_ip,
// details) and in a few looser shapes (missing fields, other types).
func Events() []string {
	return []string{
		`{"event_id":"evt-0001","timestamp":"2024-05-01T12:00:00Z","actor":"alice","action":"user.login","target":"console","outcome":"success","severity":"info","source_ip":"192.0.2.10","details":{"method":"password","mfa":true,"email":"alice@example.com","user_agent":"Mozilla/5.0"}}`,
		`{"event_id":"evt-0002","timestamp":"2024-05-01T12:00:01Z","actor":"bob","action":"user.login","target":"console","outcome":"failure","severity":"warning","source_ip":"198.51.100.7","details":{"reason":"bad password","password":"hunter2"}}`,
		`{"event_id":"evt-0003","timestamp":"2024-05-01T12:00:02Z","actor":"bob","action":"user.login","target":"console","outcome":"failure","severity":"warning","source_ip":"198.51.100.7","details":{"reason":"bad password"}}`,
		`{"event_id":"evt-0004","timestamp":"2024-05-01T12:00:03Z","actor":"carol","action":"document.read","target":"/finance/q1.xlsx","outcome":"success","severity":"info","source_ip":"192.0.2.11","details":{"resource":{"type":"document","id":"doc-42"},"bytes":18234}}`,
		`{"event_id":"evt-0005","timestamp":"2024-05-01T12:00:04Z","actor":"dave","action":"role.grant","target":"erin","outcome":"success","severity":"high","source_ip":"192.0.2.4","details":{"role":"admin","approved_by":null}}`,
		`{"event_id":"evt-0006","timestamp":"2024-05-01T12:00:05+02:00","actor":"frank","action":"payment.charge","target":"order-7781","outcome":"success","severity":"info","source_ip":"192.0.2.12","details":{"amount":{"value":129.99,"currency":"EUR"},"card_number":"4111 1111 1111 1111","note":"card 5500 0055 5555 5559 exp 12/27","ssn":"123-45-6789","phone":"+1-202-555-0173"}}`,
		`{"event_id":"evt-0007","timestamp":"2024-05-01T12:00:06Z","actor":"grace","action":"config.update","target":"auth-service","outcome":"success","severity":"medium","source_ip":"192.0.2.13","details":{"changes":[{"key":"max_sessions","old":5,"new":10},{"key":"mfa_required","old":true,"new":false}]}}`,
		`{"event_id":"evt-0008","timestamp":"2024-05-01T12:00:07Z","actor":"svc-monitor","action":"healthcheck.ping","target":"api","outcome":"success","severity":"debug","source_ip":"10.0.0.5","details":{}}`,
		`{"event_id":"evt-0009","timestamp":"2024-05-01T12:00:08Z","actor":"heidi","action":"message.send","target":"support","outcome":"success","severity":"info","source_ip":"192.0.2.14","details":{"email":"heidi@example.net","text":"Please call me on +44 20 7946 0958 or mail heidi.private@example.com","tags":["customer","priority"]}}`,
		`{"event_id":"evt-0010","timestamp":"2024-05-01T12:00:09.123Z","actor":"alice","action":"user.logout","target":"console","outcome":"success","severity":"info","source_ip":"192.0.2.10","details":{"session":{"id":"s-9f8e","duration_s":3600}}}`,
		`{"event_id":"evt-0011","timestamp":"2024-05-01T12:00:10Z","actor":"mallory","action":"user.delete","target":"root","outcome":"denied","severity":"critical","source_ip":"203.0.113.99","details":{"geo":{"country":"ZZ","lat":0.0,"lon":-0.0}}}`,
		`{"event_id":"evt-0012","actor":"ivan","action":"data.export"}`,
		`{"event_id":"evt-0013","timestamp":1714564811,"actor":{"name":"judy","id":7},"action":"LOGIN","outcome":"SUCCESS","details":{"a":[1,2,{"b":[true,false,null]}],"empty":{},"list":[]}}`,
		`{"event_id":"evt-0014","timestamp":"2024-05-01T12:00:12Z","actor":"ken","action":"api.call","target":"/v1/users","outcome":"failure","severity":"error","source_ip":"2001:db8::1","details":{"method":"POST","headers":{"authorization":"Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"},"status":500,"latency_ms":1234.5}}`,
		`{"event_id":"evt-0015","timestamp":"2024-05-01T12:00:13Z","actor":"lena","action":"sudo.exec","target":"db-1","outcome":"success","severity":"notice","source_ip":"192.0.2.15","details":{"command":"systemctl restart postgres","api_key":"sk_live_0123456789abcdef"}}`,
	}
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
