// The chat page: multi-turn conversation over POST /v1/chat, read with fetch and
// an incremental event-stream parser; Stop cancels on the server; a dropped
// connection resumes from the last event id with nothing lost or repeated, waiting
// as the CLI does (reconnect.js); a POST retried before its `start` arrived carries
// the question's Idempotency-Key again, so the service answers with the stream it
// already started. A keyed service is used through a session cookie (signIn). An
// ES module: it adds nothing to `window`.

import { EVENT_TYPES } from "./events.js";
import { EventStreamParser } from "./eventstream.js";
import { MarkdownView } from "./markdown.js";
import { FIRST_CONNECTION, MAX_RECONNECTIONS, isRetriedAnswer, nextReconnection, retryAfterMs } from "./reconnect.js";

const params = new URLSearchParams(location.search);
const options = {
  model: params.get("model") || undefined,
  max_tokens: params.get("max_tokens") ? parseInt(params.get("max_tokens"), 10) : undefined,
  tools: toolsParameter(params.get("tools")),
};

/** `?tools=` holds OpenAI tools as JSON, so the page can show tool calls; the
 *  page does not run them (the service runs its own tools, SSE_CHAT_TOOLS). */
function toolsParameter(value) {
  if (!value) return undefined;
  try { return JSON.parse(value); } catch { return undefined; }
}
// Earlier versions kept the API key in sessionStorage; the session cookie replaced it.
sessionStorage.removeItem("sse-chat-key");
const messages = [];   // the conversation so far, as sent to the service
let current = null;    // the answer streaming now: {streamId, lastEventId, idempotencyKey}

const $ = (id) => document.getElementById(id);
const conversation = $("conversation"), promptBox = $("prompt"), sendButton = $("send"), stopButton = $("stop");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setStatus(text) { $("status").textContent = text; }

function addItem(role, text) {
  const li = document.createElement("li");
  li.className = role;
  if (role === "user") li.textContent = text;
  conversation.appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function note(li, text) {
  const n = document.createElement("div");
  n.className = "note";
  n.textContent = text;
  li.appendChild(n);
}

function showError(li, text) { li.classList.add("error"); note(li, "Error: " + text); setStatus(""); }

/** A fresh UUID4 for a question's Idempotency-Key (IETF httpapi draft "The
 *  Idempotency-Key HTTP Header Field"). crypto.randomUUID exists only in secure
 *  contexts (https, localhost); a page served over plain http elsewhere makes one
 *  from crypto.getRandomValues, as RFC 9562 (5.4) lays it out. */
function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;  // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80;  // variant 10
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function errorType(body) {
  try { return JSON.parse(body).error.type; } catch { return null; }
}

function errorMessage(body, fallback) {
  try { const e = JSON.parse(body).error; return `${e.message} (${e.type})`; } catch { return fallback; }
}

/** An answer being shown: its text, rendered at most once per animation frame. */
class AnswerView {
  constructor(li) {
    const answer = document.createElement("div");
    answer.className = "answer";
    li.appendChild(answer);
    this.li = li;
    this.markdown = new MarkdownView(answer);
    this.content = "";
    this.frame = 0;
  }

  /** A `tool_call` fragment, shown as a collapsed block before the answer text:
   *  its summary is the function's name and its arguments as they arrive. A
   *  fragment with an `id` begins a call (a later step of the answer may number
   *  its calls from 0 again); one without continues the call at its `index`. */
  toolCall(fragment) {
    this.calls = this.calls || new Map();      // index -> the call being streamed there
    this.callsById = this.callsById || new Map();
    let call = this.calls.get(fragment.index);
    if (!call || (fragment.id && fragment.id !== call.id)) {
      const box = document.createElement("details");
      box.className = "tool-call";
      const summary = document.createElement("summary");
      const name = document.createElement("span");
      name.className = "tool-name";
      const args = document.createElement("code");
      args.className = "tool-arguments";
      summary.append(name, args);
      box.append(summary);
      this.li.insertBefore(box, this.markdown.container);
      call = { id: fragment.id, box, name, args };
      this.calls.set(fragment.index, call);
      if (fragment.id) this.callsById.set(fragment.id, call);
    }
    if (fragment.name) call.name.textContent = fragment.name;
    call.args.textContent += fragment.arguments;
  }

  /** A `tool_result` (a tool the service ran): shown inside its call's block,
   *  which opens on a click; a failed call is marked as such. */
  toolResult(result) {
    let call = this.callsById && this.callsById.get(result.tool_call_id);
    if (!call) {
      this.toolCall({ index: -1 - (this.calls ? this.calls.size : 0), id: result.tool_call_id, name: result.name,
                      arguments: "" });
      call = this.callsById.get(result.tool_call_id);
    }
    const output = document.createElement("pre");
    output.className = "tool-result";
    if (result.error) {
      call.box.classList.add("failed");
      output.textContent = `${result.error.type}: ${result.error.message}`;
    } else {
      output.textContent = result.content;
    }
    call.box.classList.add("answered");
    call.box.append(output);
  }

  append(text) {
    this.content += text;
    this.markdown.append(text);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render(final = false) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.markdown.render(final);
    this.li.scrollIntoView({ block: "end" });
  }
}

async function ask(text) {
  messages.push({ role: "user", content: text });
  addItem("user", text);
  const li = addItem("assistant");
  const view = new AnswerView(li);
  li.classList.add("streaming");
  sendButton.disabled = true; stopButton.disabled = false;
  current = { streamId: null, lastEventId: "", idempotencyKey: newIdempotencyKey() };
  try {
    const outcome = await follow((event) => onEvent(event, view));
    view.render(true);
    messages.push({ role: "assistant", content: view.content });
    showOutcome(li, outcome);
    setStatus("");
  } catch (err) {
    if (view.content) messages.push({ role: "assistant", content: view.content });
    view.render(true);
    showError(li, err.message);
  } finally {
    li.classList.remove("streaming");
    sendButton.disabled = false; stopButton.disabled = true;
    current = null;
    promptBox.focus();
  }
}

/** What the page does with each event type of EVENT_TYPES (events.js, the
 *  server's declaration); a type without a handler is ignored. */
const HANDLERS = {
  start: (data) => { current.streamId = data.stream_id; },
  token: (data, view) => view.append(data.content),
  tool_call: (data, view) => view.toolCall(data),
  tool_result: (data, view) => view.toolResult(data),
  done: (data) => ({ done: data }),
  error: (data) => ({ error: data.error }),
};

/** One event of the stream: the outcome once it is the last one (a terminal
 *  type of EVENT_TYPES), else null. Types the table does not declare are
 *  ignored: a newer service may send more. */
function onEvent(event, view) {
  const kind = EVENT_TYPES[event.type];
  if (!kind) return null;
  const data = JSON.parse(event.data);
  const handler = HANDLERS[event.type];
  const result = handler ? handler(data, view) : undefined;
  return kind.terminal ? (result || { done: null }) : null;
}

/** How the answer ended: an error, the `done` event's finish_reason, or, after a
 *  204 on resume, that it ended without the reason being received. */
function showOutcome(li, outcome) {
  if (outcome.error) return showError(li, `${outcome.error.message} (${outcome.error.type})`);
  if (!outcome.done) return note(li, "ended (the finish reason was not received)");
  li.dataset.finishReason = outcome.done.finish_reason;
  if (outcome.done.finish_reason === "cancelled") note(li, "stopped");
  else if (outcome.done.finish_reason === "length") note(li, "cut at max_tokens");
  else if (outcome.done.finish_reason === "tool_calls") note(li, "called a tool of the request (this page does not run those)");
}

/**
 * Read the stream to its last event, reconnecting with Last-Event-ID after a
 * dropped connection or a 502/503/504 answer, as reconnect.js says.
 */
async function follow(handle) {
  let policy = FIRST_CONNECTION;
  for (;;) {
    const attempt = await connect(handle);
    if (attempt.outcome) return attempt.outcome;
    policy = nextReconnection(policy, attempt, Math.random());
    if (policy.giveUp) throw new Error(`gave up after ${MAX_RECONNECTIONS} reconnection attempts: ${attempt.reason}`);
    const next = current.lastEventId ? `resuming after ${current.lastEventId}` : "retrying";
    setStatus(`${attempt.reason}; ${next} in ${(policy.waitMs / 1000).toFixed(1)} s `
              + `(attempt ${policy.failures} of ${MAX_RECONNECTIONS})…`);
    await sleep(policy.waitMs);
  }
}

/**
 * One connection: `{outcome}` at the stream's end, or a drop to retry
 * `{reason, progressed, retryMs, leastWaitMs}`. Throws on an answer no retry changes.
 */
async function connect(handle) {
  let response;
  try {
    response = await openStream();
  } catch (err) {
    return dropped("the connection failed: " + err.message);
  }
  // WHATWG HTML, 9.2 "Server-sent events": "a client can be told to stop
  // reconnecting using the HTTP 204 No Content response code". The stream has
  // ended, but its `done` event (with finish_reason) was not received here.
  if (response.status === 204) return { outcome: { done: null } };
  if (response.status === 401 && await signIn()) return connect(handle);
  if (!response.ok) return refused(response);
  return readEvents(response, handle);
}

function dropped(reason, { progressed = false, retryMs = null, leastWaitMs = 0 } = {}) {
  return { reason, progressed, retryMs, leastWaitMs };
}

async function refused(response) {
  const body = await response.text().catch(() => "");
  if (!isRetriedAnswer(response.status, errorType(body))) throw new Error(errorMessage(body, `HTTP ${response.status}`));
  return dropped(`the service is unavailable (HTTP ${response.status})`,
                 { leastWaitMs: retryAfterMs(response.headers.get("Retry-After")) });
}

/** Dispatch the response's events until the last one, or until the connection drops. */
async function readEvents(response, handle) {
  const parser = new EventStreamParser(() => {}, current.lastEventId);
  let outcome = null, progressed = false;
  parser.onEvent = (event) => {
    progressed = true;
    current.lastEventId = event.lastEventId;
    outcome = outcome || handle(event);
  };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    while (!outcome) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } catch { /* cut: resumed by the caller */ }
  if (outcome) { reader.cancel().catch(() => {}); return { outcome }; }
  return dropped("connection lost", { progressed, retryMs: parser.retry });
}

// A service with SSE_CHAT_API_KEYS answers 401: ask for a key and trade it once
// for a session cookie (POST /v1/session; HttpOnly, so no script here can read
// it). The page keeps no key: later requests carry only the cookie, and a 401
// after the session ended (expired, key removed) asks again. Returns whether a
// session was started; false when the person cancels.
async function signIn() {
  let question = "This service needs an API key (SSE_CHAT_API_KEYS):";
  for (;;) {
    const key = (window.prompt(question) || "").trim();
    if (!key) return false;
    const response = await fetch("/v1/session", {
      method: "POST", headers: { "Authorization": "Bearer " + key }, credentials: "same-origin", cache: "no-store",
    });
    if (response.ok) return true;
    const body = await response.text().catch(() => "");
    if (response.status !== 401) throw new Error(errorMessage(body, `HTTP ${response.status}`));
    question = "That key was refused. This service needs an API key (SSE_CHAT_API_KEYS):";
  }
}

/** POST the conversation (with the question's Idempotency-Key, the same on every
 *  retry), or resume the current stream after its last event. */
function openStream() {
  const headers = { "Accept": "text/event-stream" };
  if (current.streamId && current.lastEventId) {
    headers["Last-Event-ID"] = current.lastEventId;
    return fetch(`/v1/streams/${encodeURIComponent(current.streamId)}`,
                 { headers, cache: "no-store", credentials: "same-origin" });
  }
  headers["Content-Type"] = "application/json";
  headers["Idempotency-Key"] = current.idempotencyKey;
  return fetch("/v1/chat", { method: "POST", headers, credentials: "same-origin",
                             body: JSON.stringify({ messages, ...options }) });
}

async function stopAnswer() {
  if (!current || !current.streamId) return;
  stopButton.disabled = true;
  const url = `/v1/streams/${encodeURIComponent(current.streamId)}`;
  const cancel = () => fetch(url, { method: "DELETE", credentials: "same-origin" });
  let response = await cancel();
  if (response.status === 401 && await signIn()) response = await cancel();
  if (!response.ok && response.status !== 404) setStatus("could not stop: HTTP " + response.status);
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = promptBox.value.trim();
  if (!text || current) return;
  promptBox.value = "";
  ask(text);
});
promptBox.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
});
stopButton.addEventListener("click", stopAnswer);
