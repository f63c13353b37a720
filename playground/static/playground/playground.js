// The playground page: a small editor, a run form, live status and output (event stream, else polling),
// results, recent runs.
// Talks only to /playground/api/ (session cookie + CSRF token); never sees an API key.
// Everything from a run (output, paths, messages) is inserted as text, never as HTML.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("playground-config").textContent);
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const TERMINAL = new Set(["succeeded", "failed", "timeout", "oom", "cancelled", "error"]);
  const INDENT = "    ";
  const STATUS_LABELS = { submitting: "submitting…", rejected: "not started" };
  const FIELD_BY_PARAM = {
    language: "language",
    code: "code",
    stdin: "stdin",
    "limits.timeout_ms": "timeout_ms",
    "limits.cpu_ms": "timeout_ms",
    "limits.memory_mb": "memory_mb",
  };

  const $ = (id) => document.getElementById(id);
  const els = {
    language: $("language"),
    example: $("example"),
    loadExample: $("load-example"),
    entryFile: $("entry-file"),
    code: $("code"),
    stdin: $("stdin"),
    timeout: $("timeout_ms"),
    memory: $("memory_mb"),
    run: $("run"),
    status: $("status"),
    runId: $("run-id"),
    message: $("message"),
    stdout: $("stdout"),
    stderr: $("stderr"),
    stdoutTruncated: $("stdout-truncated"),
    stderrTruncated: $("stderr-truncated"),
    artifacts: $("artifacts"),
    recentBody: document.querySelector("#recent-runs tbody"),
    refreshRecent: $("refresh-recent"),
  };

  const languages = new Map(config.languages.map((lang) => [lang.name, lang]));
  const drafts = new Map(); // language -> {code, stdin, example}: switching languages keeps your edits
  let currentLanguage = null;
  let busy = false;
  let followGeneration = 0; // bumps whenever the page stops following a run
  let startedAt = 0;

  // ---- small helpers ------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function formatBytes(n) {
    if (n === null || n === undefined) return "—";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  }

  function formatMs(n) {
    return n === null || n === undefined ? "—" : `${n} ms`;
  }

  function formatTime(seconds) {
    return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (_) {
      return null;
    }
  }

  function runUrl(runId) {
    return config.urls.run.replace("RUN_ID", encodeURIComponent(runId));
  }

  // ---- status and messages ------------------------------------------------------------------------

  function setStatus(status) {
    els.status.dataset.status = status;
    let label = STATUS_LABELS[status] || status;
    if ((status === "queued" || status === "running") && startedAt) {
      label += ` · ${((Date.now() - startedAt) / 1000).toFixed(1)} s`;
    }
    els.status.textContent = label;
  }

  function showMessage(kind, code, text, link) {
    els.message.hidden = false;
    els.message.dataset.kind = kind;
    els.message.dataset.code = code || "";
    els.message.textContent = text;
    if (link) {
      els.message.append(" ", el("a", { href: link.href }, link.text));
    }
  }

  function clearMessage() {
    els.message.hidden = true;
    els.message.dataset.kind = "";
    els.message.dataset.code = "";
    els.message.textContent = "";
  }

  function clearInvalid() {
    for (const node of document.querySelectorAll("[aria-invalid=true]")) node.removeAttribute("aria-invalid");
  }

  // The API's error envelope -> a sentence a person can act on.
  function showApiError(response, body) {
    const error = (body && body.error) || {};
    const code = error.code || `http_${response.status}`;
    const message = error.message || `The server answered ${response.status}.`;
    const retryAfter = response.headers.get("Retry-After");
    let text;
    let link = null;
    switch (code) {
      case "rate_limit_exceeded":
        text =
          `Rate limit reached: your playground key has made too many requests in a short time. ` +
          `Try again in ${retryAfter || 1} s.`;
        break;
      case "concurrency_limit_exceeded":
        text = `Concurrency limit reached: ${message} Wait for one to finish, then run again.`;
        break;
      case "server_overloaded":
        text = `The server is busy (too many queued runs). Try again in ${retryAfter || 5} s.`;
        break;
      case "not_authenticated":
      case "csrf_failed":
        text = message;
        link = { href: config.urls.login, text: "Log in again" };
        break;
      default:
        if (response.status === 400 || response.status === 413) {
          text = error.param ? `Invalid request (field ${error.param}): ${message}` : `Invalid request: ${message}`;
        } else {
          text = `Error ${response.status}: ${message}`;
        }
    }
    const field = error.param && FIELD_BY_PARAM[error.param];
    if (field) $(field).setAttribute("aria-invalid", "true");
    showMessage("error", code, text, link);
  }

  // A run's outcome -> a sentence. The run's own error message is kept after it.
  function describeRun(run) {
    const error = run.error || {};
    const limits = run.limits || {};
    const detail = error.message ? ` (${error.message})` : "";
    switch (run.status) {
      case "queued":
        return ["info", "", "Queued: waiting for a worker…"];
      case "running":
        return ["info", "", "Running…"];
      case "succeeded":
        return ["success", "", `Finished in ${formatMs(run.usage.wall_ms)} with exit code 0.`];
      case "failed":
        if (error.code === "compile_error") {
          return ["error", error.code, "Compile error: the program did not compile. The compiler's output is in stderr."];
        }
        if (run.signal) return ["error", error.code || "", `The program was killed by ${run.signal}.${detail}`];
        return ["error", error.code || "", `The program exited with code ${run.exit_code}.${detail}`];
      case "timeout":
        if (error.code === "cpu_timeout") {
          return ["error", error.code, `CPU time limit exceeded: the program used more than ${limits.cpu_ms} ms of CPU and was stopped.`];
        }
        return [
          "error",
          error.code || "wall_timeout",
          `Timed out: the program ran longer than its time limit (timeout_ms ${limits.timeout_ms} ms) and was stopped.`,
        ];
      case "oom":
        return [
          "error",
          error.code || "memory_limit",
          `Out of memory: the program needed more than its memory limit (memory_mb ${limits.memory_mb} MB) and was killed.`,
        ];
      case "cancelled":
        return ["warning", error.code || "cancelled", `Cancelled.${detail}`];
      case "error":
        return ["error", error.code || "", `The service could not run the program${detail}. This is not your code's fault; try again.`];
      default:
        return ["info", "", run.status];
    }
  }

  // ---- showing a run ------------------------------------------------------------------------------

  function clearResult() {
    clearMessage();
    clearInvalid();
    els.runId.textContent = "";
    els.stdout.textContent = "";
    els.stderr.textContent = "";
    els.stdoutTruncated.hidden = true;
    els.stderrTruncated.hidden = true;
    for (const id of ["usage-wall_ms", "usage-cpu_ms", "usage-memory_peak", "usage-exit_code", "usage-runtime"]) {
      $(id).textContent = "—";
    }
    els.artifacts.replaceChildren();
  }

  function showArtifacts(artifacts) {
    const items = artifacts.map((artifact) => {
      const item = el("li", { "data-testid": "artifact", "data-path": artifact.path });
      const label = `${artifact.path} · ${formatBytes(artifact.bytes)} · ${artifact.content_type}`;
      item.append(
        el("a", { href: artifact.url, download: artifact.filename, rel: "noopener", "data-testid": "artifact-download" }, label),
      );
      if ((artifact.content_type || "").startsWith("image/")) {
        // The download answers as an attachment with a sandboxing CSP; an <img> still renders it.
        item.append(el("img", { src: artifact.url, alt: artifact.path, "data-testid": "artifact-preview" }));
      }
      return item;
    });
    if (!items.length) items.push(el("li", { class: "empty" }, "none"));
    els.artifacts.replaceChildren(...items);
  }

  function showRun(run) {
    setStatus(run.status);
    els.runId.textContent = run.id;
    els.stdout.textContent = run.stdout;
    els.stderr.textContent = run.stderr;
    els.stdoutTruncated.hidden = !run.stdout_truncated;
    els.stderrTruncated.hidden = !run.stderr_truncated;
    const usage = run.usage || {};
    $("usage-wall_ms").textContent = formatMs(usage.wall_ms);
    $("usage-cpu_ms").textContent = formatMs(usage.cpu_ms);
    $("usage-memory_peak").textContent = formatBytes(usage.memory_peak_bytes);
    $("usage-exit_code").textContent =
      run.exit_code !== null && run.exit_code !== undefined ? String(run.exit_code) : run.signal || "—";
    $("usage-runtime").textContent = run.runtime_version ? `${run.language} ${run.runtime_version}` : run.language;
    if (TERMINAL.has(run.status)) showArtifacts(run.artifacts || []);
    const [kind, code, text] = describeRun(run);
    showMessage(kind, code, text);
  }

  function setBusy(value) {
    busy = value;
    els.run.disabled = value;
    for (const button of els.recentBody.querySelectorAll("button")) button.disabled = value;
  }

  // Follow a run until it is terminal: its event stream when the browser has EventSource (output
  // appears as the program writes it), else by polling; a newer run or "show" stops either.
  function follow(run) {
    if (window.EventSource && config.urls.events && !TERMINAL.has(run.status)) {
      stream(run);
    } else {
      poll(run);
    }
  }

  function stream(run) {
    const generation = ++followGeneration;
    setBusy(true);
    showRun(run);
    const source = new EventSource(config.urls.events.replace("RUN_ID", encodeURIComponent(run.id)));
    let closed = false;
    const close = () => {
      closed = true;
      source.close();
    };
    const current = () => {
      if (generation === followGeneration) return true;
      close();
      return false;
    };
    source.addEventListener("run.started", (event) => {
      if (current()) showRun(JSON.parse(event.data));
    });
    source.addEventListener("run.output", (event) => {
      if (!current()) return;
      const chunk = JSON.parse(event.data);
      const pane = chunk.stream === "stderr" ? els.stderr : els.stdout;
      pane.textContent += chunk.data;
    });
    source.addEventListener("run.completed", (event) => {
      close();  // before the server ends the stream: EventSource would reconnect and replay it
      if (generation !== followGeneration) return;
      const final = JSON.parse(event.data);
      if (TERMINAL.has(final.status)) {
        showRun(final);
        finish();
      } else {
        poll(final);  // still running after the server's longest wait
      }
    });
    source.onerror = () => {
      if (closed) return;
      close();
      if (generation === followGeneration) poll(run);  // no stream (a proxy, an old run): poll instead
    };
  }

  // Poll the run every poll_interval_ms until it is terminal.
  function poll(run) {
    const generation = ++followGeneration;
    let failures = 0;
    setBusy(true);
    showRun(run);
    if (TERMINAL.has(run.status)) {
      finish();
      return;
    }
    const tick = async () => {
      if (generation !== followGeneration) return;
      let response;
      let body;
      try {
        response = await fetch(runUrl(run.id), {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
          cache: "no-store",
        });
        body = await readJson(response);
      } catch (err) {
        response = null;
      }
      if (generation !== followGeneration) return;
      if (!response || response.status === 429 || response.status >= 500) {
        // A blip of the network or the server: keep following, more slowly, for a while.
        failures += 1;
        if (failures > 30) {
          showMessage("error", "poll_failed", "Lost contact with the server while following the run. Reload the page to see its result.");
          finish();
          return;
        }
        window.setTimeout(tick, Math.min(5000, config.poll_interval_ms * 2 ** Math.min(failures, 4)));
        return;
      }
      if (!response.ok) {
        showApiError(response, body);
        finish();
        return;
      }
      failures = 0;
      showRun(body);
      if (TERMINAL.has(body.status)) {
        finish();
        return;
      }
      window.setTimeout(tick, config.poll_interval_ms);
    };
    window.setTimeout(tick, config.poll_interval_ms);
  }

  function finish() {
    startedAt = 0;
    setBusy(false);
    refreshRecent();
  }

  // ---- running ------------------------------------------------------------------------------------

  function requestBody() {
    const body = { language: els.language.value, code: els.code.value, stdin: els.stdin.value };
    const limits = {};
    for (const [name, input] of [["timeout_ms", els.timeout], ["memory_mb", els.memory]]) {
      const raw = input.value.trim();
      // Sent as typed (a number when it is one), so the server's validation names the field.
      if (raw !== "") limits[name] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
    }
    if (Object.keys(limits).length) body.limits = limits;
    return body;
  }

  async function startRun() {
    if (busy) return;
    followGeneration += 1;
    setBusy(true);
    clearResult();
    startedAt = Date.now();
    setStatus("submitting");
    let response;
    let body;
    try {
      response = await fetch(config.urls.runs, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
        credentials: "same-origin",
        body: JSON.stringify(requestBody()),
      });
      body = await readJson(response);
    } catch (err) {
      setStatus("rejected");
      showMessage("error", "network_error", `Could not reach the server: ${err.message}`);
      startedAt = 0;
      setBusy(false);
      return;
    }
    if (response.status !== 202 && response.status !== 200) {
      setStatus("rejected");
      showApiError(response, body);
      startedAt = 0;
      setBusy(false);
      return;
    }
    refreshRecent();
    follow(body);
  }

  // ---- recent runs --------------------------------------------------------------------------------

  async function refreshRecent() {
    let response;
    try {
      response = await fetch(`${config.urls.runs}?limit=${config.recent_runs}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (_) {
      return;
    }
    const body = await readJson(response);
    if (!response.ok || !body) return;
    const rows = body.data.map((run) => {
      const row = el("tr", { "data-run-id": run.id });
      const idCell = el("td");
      idCell.append(el("a", { href: body.admin_urls[run.id], "data-testid": "recent-run-link" }, run.id));
      const statusCell = el("td", { "data-testid": "recent-run-status" });
      statusCell.append(el("span", { class: "badge small", "data-status": run.status }, run.status));
      const showCell = el("td");
      const show = el("button", { type: "button", class: "secondary small", "data-testid": "recent-run-show" }, "show");
      show.disabled = busy;
      show.addEventListener("click", () => showRecent(run.id));
      showCell.append(show);
      row.append(
        idCell,
        el("td", {}, run.language),
        statusCell,
        el("td", {}, formatTime(run.created_at)),
        el("td", {}, formatMs(run.usage.wall_ms)),
        el("td", {}, run.exit_code !== null ? run.exit_code : run.signal || "—"),
        showCell,
      );
      return row;
    });
    if (!rows.length) {
      const empty = el("tr", { class: "empty" });
      empty.append(el("td", { colspan: "7" }, "No runs yet."));
      rows.push(empty);
    }
    els.recentBody.replaceChildren(...rows);
  }

  async function showRecent(runId) {
    if (busy) return;
    let response;
    try {
      response = await fetch(runUrl(runId), { headers: { Accept: "application/json" }, credentials: "same-origin" });
    } catch (err) {
      showMessage("error", "network_error", `Could not reach the server: ${err.message}`);
      return;
    }
    const body = await readJson(response);
    clearResult();
    if (!response.ok) {
      showApiError(response, body);
      return;
    }
    follow(body);
  }

  // ---- languages and examples ---------------------------------------------------------------------

  function fillExamples(lang, selectedId) {
    els.example.replaceChildren(
      ...lang.examples.map((example) => el("option", { value: example.id }, example.title)),
    );
    if (selectedId) els.example.value = selectedId;
  }

  function loadExample() {
    const lang = languages.get(els.language.value);
    const example = lang.examples.find((e) => e.id === els.example.value) || lang.examples[0];
    if (!example) return;
    els.code.value = example.code;
    els.stdin.value = example.stdin;
    // An example brings its own limits (e.g. a short timeout); the others go back to the default.
    els.timeout.value = example.limits.timeout_ms !== undefined ? example.limits.timeout_ms : "";
    els.memory.value = example.limits.memory_mb !== undefined ? example.limits.memory_mb : "";
  }

  function switchLanguage(name) {
    if (currentLanguage) {
      drafts.set(currentLanguage, { code: els.code.value, stdin: els.stdin.value, example: els.example.value });
    }
    currentLanguage = name;
    const lang = languages.get(name);
    els.entryFile.textContent = `(${lang.entry_file})`;
    const draft = drafts.get(name);
    fillExamples(lang, draft && draft.example);
    if (draft) {
      els.code.value = draft.code;
      els.stdin.value = draft.stdin;
    } else {
      loadExample();
    }
  }

  // ---- the editor ---------------------------------------------------------------------------------

  // Replace [start, end) keeping the browser's undo history where it can (execCommand), then select.
  function replaceRange(textarea, start, end, text, selectStart, selectEnd) {
    textarea.focus();
    textarea.setSelectionRange(start, end);
    const done = text === "" ? document.execCommand("delete") : document.execCommand("insertText", false, text);
    if (!done) textarea.setRangeText(text, start, end, "end");
    textarea.setSelectionRange(selectStart, selectEnd);
  }

  function lineStartOf(value, index) {
    return value.lastIndexOf("\n", index - 1) + 1;
  }

  // The selected lines: from the first line's start to the last line's end (a selection ending at
  // the very start of a line does not take that line).
  function selectedLines(textarea) {
    const { selectionStart: start, selectionEnd: end, value } = textarea;
    const from = lineStartOf(value, start);
    let to = end > start && value[end - 1] === "\n" ? end - 1 : end;
    const next = value.indexOf("\n", to);
    to = next === -1 ? value.length : next;
    return { from, to, lines: value.slice(from, to).split("\n") };
  }

  function indent(textarea) {
    const { selectionStart: start, selectionEnd: end, value } = textarea;
    if (!value.slice(start, end).includes("\n")) {
      const caret = start + INDENT.length;
      replaceRange(textarea, start, end, INDENT, caret, caret);
      return;
    }
    const { from, to, lines } = selectedLines(textarea);
    const text = lines.map((line) => (line.length ? INDENT + line : line)).join("\n");
    replaceRange(textarea, from, to, text, from, from + text.length);
  }

  function dedentLine(line) {
    if (line.startsWith("\t")) return [line.slice(1), 1];
    const spaces = /^ {0,4}/.exec(line)[0].length;
    return [line.slice(spaces), spaces];
  }

  function dedent(textarea) {
    const { selectionStart: start, selectionEnd: end } = textarea;
    const { from, to, lines } = selectedLines(textarea);
    const results = lines.map(dedentLine);
    const removed = results.reduce((sum, [, n]) => sum + n, 0);
    if (!removed) return;
    const text = results.map(([line]) => line).join("\n");
    if (start === end) {
      const caret = Math.max(from, start - results[0][1]);
      replaceRange(textarea, from, to, text, caret, caret);
    } else {
      replaceRange(textarea, from, to, text, from, from + text.length);
    }
  }

  function newlineWithIndent(textarea, event) {
    const { selectionStart: start, selectionEnd: end, value } = textarea;
    const before = value.slice(lineStartOf(value, start), start);
    let indentation = /^[ \t]*/.exec(before)[0];
    if (/[:{([]\s*$/.test(before)) indentation += INDENT;
    if (!indentation) return;
    event.preventDefault();
    const caret = start + 1 + indentation.length;
    replaceRange(textarea, start, end, `\n${indentation}`, caret, caret);
  }

  let tabLeavesEditor = false;

  function onEditorKeydown(event) {
    if (["Shift", "Control", "Alt", "Meta"].includes(event.key)) return;
    if (event.key === "Escape") {
      tabLeavesEditor = true;
      return;
    }
    if (event.key === "Tab" && !event.ctrlKey && !event.altKey && !event.metaKey) {
      if (tabLeavesEditor) {
        tabLeavesEditor = false;
        return; // the browser moves the focus
      }
      event.preventDefault();
      if (event.shiftKey) dedent(els.code);
      else indent(els.code);
      return;
    }
    tabLeavesEditor = false;
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey && !event.isComposing) {
      newlineWithIndent(els.code, event);
    }
  }

  // ---- wiring -------------------------------------------------------------------------------------

  for (const lang of config.languages) {
    els.language.append(el("option", { value: lang.name }, lang.title));
  }
  els.timeout.max = config.limits.timeout_ms.max;
  els.timeout.placeholder = `default ${config.limits.timeout_ms.default}`;
  els.memory.max = config.limits.memory_mb.max;
  els.memory.placeholder = `default ${config.limits.memory_mb.default}`;

  els.language.addEventListener("change", () => switchLanguage(els.language.value));
  els.example.addEventListener("change", loadExample);
  els.loadExample.addEventListener("click", loadExample);
  els.code.addEventListener("keydown", onEditorKeydown);
  els.run.addEventListener("click", startRun);
  els.refreshRecent.addEventListener("click", refreshRecent);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      startRun();
    }
  });
  window.setInterval(() => {
    const status = els.status.dataset.status;
    if (startedAt && (status === "queued" || status === "running")) setStatus(status);
  }, 100);

  els.language.value = config.languages[0].name;
  switchLanguage(els.language.value);
  refreshRecent();
  document.body.dataset.ready = "true";
})();
