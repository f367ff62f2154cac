// The chat page: multi-turn conversation over POST /v1/chat, read with fetch and
// an incremental event-stream parser; Stop cancels on the server; a dropped
// connection resumes from the last event id with nothing lost or repeated.
"use strict";

const params = new URLSearchParams(location.search);
const options = {
  model: params.get("model") || undefined,
  max_tokens: params.get("max_tokens") ? parseInt(params.get("max_tokens"), 10) : undefined,
};
const MAX_RESUMES = 20;
// Answers retried like a dropped connection (a proxy's 502/504, or 503 such as
// event_log_unavailable while Redis is down), except errors no retry changes.
const RETRIED_STATUSES = new Set([502, 503, 504]);
const PERMANENT_ERRORS = new Set(["backend_unavailable"]);
const MAX_RETRY_AFTER_MS = 30000;
let apiKey = sessionStorage.getItem("sse-chat-key") || "";
const history = [];
let current = null;  // {streamId, lastEventId, stopped}

const $ = (id) => document.getElementById(id);
const conversation = $("conversation"), promptBox = $("prompt"), sendButton = $("send"), stopButton = $("stop");

function setStatus(text) { $("status").textContent = text; }

function addItem(role, text) {
  const li = document.createElement("li");
  li.className = role;
  if (role === "user") li.textContent = text;
  conversation.appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function errorMessage(body, fallback) {
  try { const e = JSON.parse(body).error; return `${e.message} (${e.type})`; } catch { return fallback; }
}

function errorType(body) {
  try { return JSON.parse(body).error.type; } catch { return null; }
}

// Retry-After in seconds, as milliseconds (0 when absent or a date), capped.
function retryAfterMs(response) {
  const seconds = Number(response.headers.get("Retry-After"));
  return seconds >= 0 ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : 0;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function ask(text) {
  history.push({ role: "user", content: text });
  addItem("user", text);
  const li = addItem("assistant");
  const answer = document.createElement("div");
  answer.className = "answer";
  li.appendChild(answer);
  li.classList.add("streaming");
  sendButton.disabled = true; stopButton.disabled = false;
  current = { streamId: null, lastEventId: "", stopped: false };
  let content = "", frame = 0;
  const render = () => { frame = 0; answer.replaceChildren(renderMarkdown(content)); li.scrollIntoView({ block: "end" }); };
  const onEvent = (event) => {
    const data = JSON.parse(event.data);
    if (event.type === "start") current.streamId = data.stream_id;
    else if (event.type === "token") { content += data.content; if (!frame) frame = requestAnimationFrame(render); }
    else if (event.type === "done") return { done: data };
    else if (event.type === "error") return { error: data.error };
    return null;
  };
  try {
    const outcome = await follow(onEvent);
    if (frame) cancelAnimationFrame(frame);
    render();
    history.push({ role: "assistant", content });
    if (outcome.error) showError(li, `${outcome.error.message} (${outcome.error.type})`);
    else if (outcome.done.finish_reason === "cancelled") note(li, "stopped");
    else if (outcome.done.finish_reason === "length") note(li, "cut at max_tokens");
    setStatus("");
  } catch (err) {
    if (content) history.push({ role: "assistant", content });
    render();
    showError(li, err.message);
  } finally {
    li.classList.remove("streaming");
    sendButton.disabled = false; stopButton.disabled = true;
    current = null;
    promptBox.focus();
  }
}

function note(li, text) { const n = document.createElement("div"); n.className = "note"; n.textContent = text; li.appendChild(n); }
function showError(li, text) { li.classList.add("error"); note(li, "Error: " + text); setStatus(""); }

// Read the stream to its terminal event, reconnecting with Last-Event-ID.
async function follow(onEvent) {
  let retryMs = 1000;
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await open();
    } catch (err) {
      if (attempt >= MAX_RESUMES) throw new Error("the connection failed: " + err.message);
      setStatus(`connection lost; reconnecting (${attempt + 1})…`);
      await sleep(retryMs);
      continue;
    }
    if (response.status === 204) return { done: { finish_reason: "stop" } };
    if (response.status === 401 && askForKey()) { attempt--; continue; }
    if (!response.ok) {
      const body = await response.text();
      const retried = RETRIED_STATUSES.has(response.status) && !PERMANENT_ERRORS.has(errorType(body));
      if (!retried || attempt >= MAX_RESUMES) throw new Error(errorMessage(body, `HTTP ${response.status}`));
      setStatus(`the service is unavailable (HTTP ${response.status}); retrying (${attempt + 1})…`);
      await sleep(Math.max(retryMs, retryAfterMs(response)));
      continue;
    }
    const parser = new EventStreamParser(() => {}, current.lastEventId);
    let outcome = null;
    parser.onEvent = (event) => { current.lastEventId = event.lastEventId; outcome = outcome || onEvent(event); };
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      while (!outcome) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
        if (outcome) break;
      }
    } catch (err) { /* cut: resume below */ }
    if (outcome) { reader.cancel().catch(() => {}); return outcome; }
    if (parser.retry !== null) retryMs = parser.retry;
    if (attempt >= MAX_RESUMES) throw new Error("the connection kept dropping; try again");
    setStatus(`connection lost; resuming after ${current.lastEventId || "the start"}…`);
    await sleep(retryMs);
  }
}

// A service with SSE_CHAT_API_KEYS answers 401: ask once per page for a key,
// kept for this tab only.
function askForKey() {
  const key = window.prompt("This service needs an API key (SSE_CHAT_API_KEYS):");
  if (!key) return false;
  apiKey = key.trim();
  sessionStorage.setItem("sse-chat-key", apiKey);
  return true;
}

function withKey(headers) {
  if (apiKey) headers["Authorization"] = "Bearer " + apiKey;
  return headers;
}

function open() {
  const headers = withKey({ "Accept": "text/event-stream" });
  if (current.streamId && current.lastEventId) {
    headers["Last-Event-ID"] = current.lastEventId;
    return fetch(`/v1/streams/${encodeURIComponent(current.streamId)}`, { headers, cache: "no-store" });
  }
  headers["Content-Type"] = "application/json";
  return fetch("/v1/chat", { method: "POST", headers, body: JSON.stringify({ messages: history, ...options }) });
}

async function stop() {
  if (!current || !current.streamId) return;
  stopButton.disabled = true;
  current.stopped = true;
  const response = await fetch(`/v1/streams/${encodeURIComponent(current.streamId)}`,
                               { method: "DELETE", headers: withKey({}) });
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
stopButton.addEventListener("click", stop);
