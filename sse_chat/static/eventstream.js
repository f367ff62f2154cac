// Incremental text/event-stream parser, after the WHATWG HTML Standard,
// 9.2.6 "Interpreting an event stream":
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
// Feed it decoded text (TextDecoder with {stream: true} strips the BOM and keeps
// split UTF-8 sequences); it calls onEvent({type, data, lastEventId}) per dispatch.
// An ES module (strict mode); `retry` is the stream's last valid "reconnection
// time" field, for the page's reconnection policy (reconnect.js).

export class EventStreamParser {
  constructor(onEvent, lastEventId = "") {
    this.onEvent = onEvent;
    this.lastEventId = lastEventId;   // the event source's last event ID string
    this.idBuffer = lastEventId;      // the last event ID buffer
    this.retry = null;                // reconnection time, milliseconds
    this.pending = "";                // an unfinished line
    this.skipLF = false;              // the previous chunk ended with CR
    this.data = "";
    this.type = "";
  }

  feed(text) {
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (this.skipLF) { this.skipLF = false; if (c === "\n") { start = i + 1; continue; } }
      if (c === "\r" || c === "\n") {
        this.line(this.pending + text.slice(start, i));
        this.pending = "";
        this.skipLF = c === "\r";
        start = i + 1;
      }
    }
    this.pending += text.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data += value + "\n";
    else if (field === "id") { if (!value.includes("\0")) this.idBuffer = value; }
    else if (field === "retry") { if (/^[0-9]+$/.test(value)) this.retry = parseInt(value, 10); }
  }

  dispatch() {
    this.lastEventId = this.idBuffer;
    if (this.data === "") { this.type = ""; return; }
    const data = this.data.endsWith("\n") ? this.data.slice(0, -1) : this.data;
    const type = this.type || "message";
    this.data = ""; this.type = "";
    this.onEvent({ type, data, lastEventId: this.lastEventId });
  }
}
