"""The reference for the recurrence tests (recurrence_test.go): python-dateutil's rrule.

Reads one JSON case per line on stdin: {"rule": "FREQ=...", "start": "YYYY-MM-DDTHH:MM:SS"
(a wall time), "zone": "Europe/Berlin", "n": 20}. Writes one JSON line per case: the
occurrences after the start, up to n, each as [wall time, UTC instant]. A wall time in a
daylight-saving gap is moved forward by the gap (dateutil.tz.resolve_imaginary, RFC 5545
section 3.3.5); one in an overlap is its first instance (fold=0).
"""
import json
import sys
from datetime import datetime, timezone

from dateutil import rrule, tz

for line in sys.stdin:
    case = json.loads(line)
    zone = tz.gettz(case["zone"])
    start = datetime.fromisoformat(case["start"]).replace(tzinfo=zone)
    out = []
    try:
        for dt in rrule.rrulestr(case["rule"], dtstart=start):
            if dt.replace(tzinfo=None) <= start.replace(tzinfo=None):
                continue
            if len(out) >= case["n"]:
                break
            utc = tz.resolve_imaginary(dt).astimezone(timezone.utc)
            out.append([dt.replace(tzinfo=None).isoformat(), utc.strftime("%Y-%m-%dT%H:%M:%SZ")])
    except Exception as e:  # a rule dateutil refuses is reported, not fatal
        out = {"error": str(e)}
    print(json.dumps(out), flush=True)
