// phonebookd's collector for the AREDN node's Prometheus exporter
// (/www/cgi-bin/metrics runs each collector in /usr/local/bin/metrics).
// The daemon renders its families itself, from the same snapshot as
// "ubus call phonebook.health status"; a daemon that is down adds nothing
// here, and Prometheus' own alerts see the families vanish.
import { connect } from "ubus";

const bus = connect();
const reply = bus ? bus.call("phonebook.health", "metrics", {}) : null;
if (reply && type(reply.text) == "string")
	print(reply.text);
