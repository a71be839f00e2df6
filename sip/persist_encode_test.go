package sip

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// TestWriteBindingsAsSavedTable: the streamed table is the savedTable
// encoding/json writes for the same rows.
func TestWriteBindingsAsSavedTable(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	rows := []bindingRow{
		{user: "1000", uri: "<sip:1000@10.0.0.2:5060>", transport: "UDP", source: netip.MustParseAddrPort("10.0.0.2:5060"),
			local: netip.MustParseAddr("10.0.0.1"), expires: now.Add(time.Hour), updated: now, callID: 1<<63 + 5, cseq: 7},
		{user: `we"ird\`, uri: "sip:x@[::1]:5070;transport=tcp\x01\xff", transport: "TCP", source: netip.MustParseAddrPort("[::1]:40000"),
			expires: now.Add(time.Minute), updated: now, callID: 1, cseq: 1},
	}
	var buf bytes.Buffer
	if err := writeBindings(&buf, rows); err != nil {
		t.Fatal(err)
	}
	var got, want savedTable
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%s: %v", buf.Bytes(), err)
	}
	want.Version = bindingsVersion
	for _, r := range rows {
		sb := savedBinding{User: r.user, URI: r.uri, Transport: r.transport, Source: r.source.String(),
			Expires: r.expires.UnixMilli(), Updated: r.updated.UnixMilli(), CallID: r.callID, CSeq: r.cseq}
		if r.local.IsValid() {
			sb.Local = r.local.String()
		}
		want.Bindings = append(want.Bindings, sb)
	}
	wb, _ := json.Marshal(want)
	var wantBack savedTable
	json.Unmarshal(wb, &wantBack)
	if !reflect.DeepEqual(got, wantBack) {
		t.Errorf("streamed table\n%+v\nwant\n%+v", got, wantBack)
	}
}
