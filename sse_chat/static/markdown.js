// A small Markdown renderer that builds DOM nodes from text nodes only: model
// output can never inject HTML. Supports fenced code, headings, lists, paragraphs,
// `code`, **bold**, *italic*, _italic_, and [links](https://…) with http(s)
// targets only (any other link stays plain text, never clickable).
//
// MarkdownView renders a growing answer incrementally: blocks that can no longer
// change are rendered once and kept; only the last, still open block is rendered
// again, so a long answer costs time in proportion to its length, not its square.

const FENCE = "```";
// ATX heading: 1 to 6 "#" and a space (CommonMark 0.31, 4.2); `s` so that a
// line containing U+2028 is still one heading.
const HEADING = /^(#{1,6})\s(.*)$/s;
const ITEM = /^\s*([-*+]|\d+[.)])\s+/;
const ORDERED = /^\s*\d/;
const LINE_END = /\r\n|\r|\n/g;     // CommonMark 0.31, 2.1: a line ending
const LINK = /\[([^\]\n]+)\]\(([^)\s]+)\)/y;
const SAFE_HREF = /^https?:\/\//i;
// CommonMark 0.31, 2.1: Unicode whitespace, and Unicode punctuation (general
// categories P and S).
const WHITESPACE = /^\s$/u;
const PUNCTUATION = /^[\p{P}\p{S}]$/u;

/** `source`'s lines: `{text, start, end}`, `end` just after the line ending. */
function splitLines(source) {
  const lines = [];
  let start = 0;
  for (const m of source.matchAll(LINE_END)) {
    const end = m.index + m[0].length;
    lines.push({ text: source.slice(start, m.index), start, end });
    start = end;
  }
  lines.push({ text: source.slice(start), start, end: source.length });
  return lines;
}

const isBlank = (text) => text.trim() === "";

/** Whether a line ends a paragraph by starting something else. */
function startsBlock(text) {
  return isBlank(text) || text.startsWith(FENCE) || HEADING.test(text) || ITEM.test(text);
}

/** The block that starts at line `i` (not blank): `[block, next line]`. */
function readBlock(lines, i) {
  const text = lines[i].text;
  if (text.startsWith(FENCE)) {
    let j = i + 1;
    while (j < lines.length && !lines[j].text.startsWith(FENCE)) j++;
    const code = lines.slice(i + 1, j).map((l) => l.text).join("\n");
    return [{ kind: "code", text: code }, Math.min(j + 1, lines.length)];
  }
  const heading = HEADING.exec(text);
  if (heading) return [{ kind: "heading", level: heading[1].length, text: heading[2].trim() }, i + 1];
  if (ITEM.test(text)) {
    let j = i;
    while (j < lines.length && ITEM.test(lines[j].text)) j++;
    const items = lines.slice(i, j).map((l) => l.text.replace(ITEM, ""));
    return [{ kind: "list", ordered: ORDERED.test(text), items }, j];
  }
  let j = i + 1;
  while (j < lines.length && !startsBlock(lines[j].text)) j++;
  return [{ kind: "paragraph", text: lines.slice(i, j).map((l) => l.text).join("\n") }, j];
}

/**
 * `source`'s blocks in order, each with `start` and `end` offsets (its first
 * line's start; just after its last line's ending).
 */
export function parseBlocks(source) {
  const lines = splitLines(source);
  const blocks = [];
  for (let i = 0; i < lines.length;) {
    if (isBlank(lines[i].text)) { i++; continue; }
    const [block, next] = readBlock(lines, i);
    blocks.push({ ...block, start: lines[i].start, end: lines[next - 1].end });
    i = next;
  }
  return blocks;
}

/** One block as a DOM node. */
export function renderBlock(block) {
  if (block.kind === "code") {
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    code.textContent = block.text;
    pre.appendChild(code);
    return pre;
  }
  if (block.kind === "heading") return inlineElement("h" + Math.min(block.level + 2, 6), block.text);
  if (block.kind === "list") {
    const list = document.createElement(block.ordered ? "ol" : "ul");
    for (const item of block.items) list.appendChild(inlineElement("li", item));
    return list;
  }
  return inlineElement("p", block.text);
}

/** The whole of `source`, rendered at once, as a DocumentFragment. */
export function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  for (const block of parseBlocks(source)) root.appendChild(renderBlock(block));
  return root;
}

/**
 * A growing Markdown text shown in `container`. `append` adds text; `render`
 * (call it at most once per animation frame) renders the blocks that settled
 * since the last call and replaces the open block's node, and nothing else.
 *
 * A block has settled once the block after it starts on a complete line: this
 * parser decides where a block ends by that line alone, so later text cannot
 * change it (a partial last line can: "-" may yet become "- item").
 */
export class MarkdownView {
  constructor(container) {
    this.container = container;
    this.open = "";      // the text from the first unsettled block on
    this.live = [];      // the nodes of the unsettled blocks (two at most), replaced on each render
  }

  append(text) { this.open += text; }

  /** Render; with `final`, the text is complete and every block settles. */
  render(final = false) {
    const blocks = parseBlocks(this.open);
    const settled = final ? blocks.length : settledCount(blocks, lastLineStart(this.open));
    const nodes = blocks.map(renderBlock);
    const [first, ...rest] = this.live;
    for (const node of rest) node.remove();
    if (first) first.replaceWith(...nodes);
    else this.container.append(...nodes);
    this.live = nodes.slice(settled);
    if (settled) this.open = this.open.slice(blocks[settled - 1].end);
  }
}

/** How many leading blocks are followed by a block that starts before `partialLine`. */
function settledCount(blocks, partialLine) {
  let n = 0;
  while (n + 1 < blocks.length && blocks[n + 1].start < partialLine) n++;
  return n;
}

/** Where the last, possibly unfinished line of `text` starts. */
function lastLineStart(text) {
  return Math.max(text.lastIndexOf("\n"), text.lastIndexOf("\r")) + 1;
}

function inlineElement(tag, text) {
  const el = document.createElement(tag);
  appendInline(el, text);
  return el;
}

/** Append `text`'s inline content to `parent`: text nodes and elements only. */
function appendInline(parent, text) {
  let literal = 0;   // where text not yet appended starts
  for (let i = 0; i < text.length;) {
    const found = inlineAt(text, i);
    if (found && found.nodes) {
      appendText(parent, text.slice(literal, i));
      parent.append(...found.nodes);
      literal = found.end;
    }
    i = found ? found.end : i + 1;
  }
  appendText(parent, text.slice(literal));
}

function appendText(parent, text) {
  if (text) parent.appendChild(document.createTextNode(text));
}

/** The inline construct at `i`: `{end, nodes}` (nodes null: literal up to end), or null. */
function inlineAt(text, i) {
  const c = text[i];
  if (c === "`") return codeSpan(text, i);
  if (c === "[") return link(text, i);
  if (c === "*" || c === "_") return emphasis(text, i);
  return null;
}

function codeSpan(text, i) {
  const end = codeSpanEnd(text, i);
  if (end < 0) return null;
  const code = document.createElement("code");
  code.textContent = text.slice(i + 1, end - 1);
  return { end, nodes: [code] };
}

/** Just after the backtick closing a one-line code span opened at `i`, or -1. */
function codeSpanEnd(text, i) {
  const close = text.indexOf("`", i + 1);
  if (close <= i + 1 || text.slice(i + 1, close).includes("\n")) return -1;
  return close + 1;
}

function link(text, i) {
  LINK.lastIndex = i;
  const m = LINK.exec(text);
  if (!m) return null;
  const end = i + m[0].length;
  if (!SAFE_HREF.test(m[2])) return { end, nodes: [document.createTextNode(m[0])] };
  const a = document.createElement("a");
  a.href = m[2]; a.rel = "noopener noreferrer"; a.target = "_blank";
  a.textContent = m[1];
  return { end, nodes: [a] };
}

/** `*`/`_` emphasis opened by the delimiter run at `i`, or the run as literal text. */
function emphasis(text, i) {
  const opener = delimiterRun(text, i);
  const closer = opener.canOpen ? findCloser(text, opener) : null;
  if (!closer) return { end: opener.end, nodes: null };
  let node = document.createDocumentFragment();
  appendInline(node, text.slice(opener.end, closer.start));
  // Delimiters match from the inside out, two for <strong>, one for <em>
  // (CommonMark 0.31, 6.2 "process emphasis": `***x***` is <em><strong>).
  let open = opener.end - opener.start, close = closer.end - closer.start;
  while (open > 0 && close > 0) {
    const size = open >= 2 && close >= 2 ? 2 : 1;
    const el = document.createElement(size === 2 ? "strong" : "em");
    el.appendChild(node);
    node = el;
    open -= size; close -= size;
  }
  const nodes = [node];
  if (open) nodes.unshift(document.createTextNode(text.slice(opener.start, opener.start + open)));
  if (close) nodes.push(document.createTextNode(text.slice(closer.end - close, closer.end)));
  return { end: closer.end, nodes };
}

/**
 * The delimiter run of `*` or `_` at `start`, and whether it can open or close
 * emphasis, after CommonMark 0.31, 6.2 "Emphasis and strong emphasis":
 * https://spec.commonmark.org/0.31.2/#left-flanking-delimiter-run
 * A run is left-flanking when not followed by whitespace, and either not followed
 * by punctuation or preceded by whitespace or punctuation (right-flanking: the
 * mirror image); the start and end of the text count as whitespace. `*` opens
 * when left-flanking and closes when right-flanking. `_` must also sit at a word
 * boundary: it opens only if not right-flanking or preceded by punctuation, and
 * closes only if not left-flanking or followed by punctuation, so the underscores
 * in `max_tokens and stream_options` or `snake_case_name` are plain text.
 */
function delimiterRun(text, start) {
  const char = text[start];
  let end = start;
  while (text[end] === char) end++;
  const before = codePointBefore(text, start), after = codePointFrom(text, end);
  const left = !isSpace(after) && (!isPunct(after) || isSpace(before) || isPunct(before));
  const right = !isSpace(before) && (!isPunct(before) || isSpace(after) || isPunct(after));
  if (char === "*") return { char, start, end, canOpen: left, canClose: right };
  return { char, start, end, canOpen: left && (!right || isPunct(before)), canClose: right && (!left || isPunct(after)) };
}

/** The first run of the opener's character that closes it, skipping nested pairs and code spans. */
function findCloser(text, opener) {
  let depth = 0;
  for (let i = opener.end; i < text.length;) {
    if (text[i] === "`" && codeSpanEnd(text, i) > 0) { i = codeSpanEnd(text, i); continue; }
    if (text[i] !== opener.char) { i++; continue; }
    const run = delimiterRun(text, i);
    if (run.canClose && depth === 0) return run;
    if (run.canClose) depth--;
    else if (run.canOpen) depth++;
    i = run.end;
  }
  return null;
}

function codePointBefore(text, i) {
  if (i === 0) return " ";
  const low = text.charCodeAt(i - 1);
  const start = low >= 0xdc00 && low <= 0xdfff && i >= 2 ? i - 2 : i - 1;
  return String.fromCodePoint(text.codePointAt(start));
}

function codePointFrom(text, i) {
  return i >= text.length ? " " : String.fromCodePoint(text.codePointAt(i));
}

const isSpace = (c) => WHITESPACE.test(c);
const isPunct = (c) => PUNCTUATION.test(c);
