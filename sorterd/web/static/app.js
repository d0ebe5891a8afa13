// sorterd web console: one live stream (server-sent events) per page, rendered at most
// once per animation frame and, because the console sends at most 4 events a second,
// at most 4 times a second. Only what changed is touched in the DOM.
"use strict";

(function () {
  const body = document.body;
  const view = body.dataset.view;
  const line = body.dataset.line;
  const role = body.dataset.role;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const STATE_TEXT = { ok: "OK", full: "FULL", disabled: "DISABLED", fault: "FAULT" };
  const REASON_COLOURS = {
    ok: "#2e9e55", no_read: "#c0262d", invalid_code: "#e0662b", multi_read_conflict: "#d9a21b",
    no_rule: "#8e5bd1", no_chute: "#5b7bd1", max_recirc: "#b04a8a", timeout: "#7d8b99",
    after_cutoff: "#4aa3b0", customs_hold: "#a0a03a",
  };
  const SILENCE_MS = 25000; // the console sends something at least every 10 s

  // What the browser spends on this page, for the benchmark (benchmarks/web.py).
  // renderMs: time in render(); handleMs: time taking events in (parse and merge).
  const perf = { renders: 0, renderMs: 0, handleMs: 0, events: 0, started: performance.now() };
  window.sorterdPerf = perf;

  const chutes = new Map(); // number -> {node, state, destination, count}
  const decisions = new Map(); // line|tracking|seq -> row
  let pending = null; // events merged until the next frame
  let source = null;
  let lastHeard = 0;
  let serverUp = false;

  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.nav === view) a.classList.add("active");
  });

  function text(id, value) {
    const node = document.getElementById(id);
    if (node.textContent !== value) node.textContent = value;
  }
  function pct(x) { return typeof x === "number" ? `${(x * 100).toFixed(1)} %` : "-"; }
  function num(x) { return typeof x === "number" ? Math.round(x).toLocaleString("en") : "-"; }
  function cell(row, value, cls) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  // --- link state --------------------------------------------------------------------------
  function setLink(state, words) {
    if (body.dataset.link !== state) body.dataset.link = state;
    text("link", words);
  }
  function showBroker(broker) {
    if (!serverUp) return;
    if (broker.connected === true) setLink("live", "live");
    else if (broker.connected === false) {
      setLink("broker-down", `disconnected: the console lost the broker (${broker.detail || "?"})`);
    } else setLink("connecting", "connecting to the broker");
  }

  // --- rendering ---------------------------------------------------------------------------
  function chuteNode(n) {
    const node = document.createElement("button");
    node.type = "button";
    node.className = "chute";
    node.dataset.chute = String(n);
    node.innerHTML = '<span class="n"></span><span class="c"></span><span class="s"></span><span class="d"></span>';
    node.children[0].textContent = String(n);
    node.addEventListener("click", () => openChute(n));
    return node;
  }
  function renderChutes(list, full) {
    const wall = document.getElementById("wall");
    if (full) {
      wall.replaceChildren();
      chutes.clear();
    }
    let added = false;
    for (const [n, state, destination, count] of list) {
      let c = chutes.get(n);
      if (!c) {
        c = { node: chuteNode(n), state: null, destination: null, count: null };
        chutes.set(n, c);
        added = true;
      }
      if (c.state !== state) {
        c.node.dataset.state = state;
        c.node.children[2].textContent = STATE_TEXT[state] || state.toUpperCase();
        c.node.title = `chute ${n}: ${STATE_TEXT[state] || state}`;
        c.state = state;
      }
      if (c.destination !== destination) {
        c.node.children[3].textContent = destination || "-";
        c.destination = destination;
      }
      if (c.count !== count) {
        c.node.children[1].textContent = String(count);
        c.count = count;
      }
    }
    if (added) {
      const order = [...chutes.keys()].sort((a, b) => a - b);
      wall.replaceChildren(...order.map((n) => chutes.get(n).node));
    }
  }
  function renderKpi(s) {
    text("line-name", s.prefix);
    text("kpi-state", (s.state || "unknown").toUpperCase() + (s.alarms.length ? ` (${s.alarms.join(", ")})` : ""));
    document.getElementById("kpi-state").classList.toggle("bad", s.state !== "online");
    text("kpi-items", num(s.items_per_h));
    text("kpi-read", pct(s.read_rate));
    text("kpi-sort", pct(s.sort_rate));
    text("kpi-recirc", pct(s.recirculation_rate));
    const c = s.chutes;
    text("kpi-chutes", `${c.ok} / ${c.full} / ${c.disabled} / ${c.fault}`);
    text("kpi-devices", s.devices_down.length ? s.devices_down.join(", ") : "none");
    document.getElementById("kpi-devices").classList.toggle("bad", s.devices_down.length > 0);
  }
  const deviceRows = new Map();
  function renderDevices(devices) {
    const tbody = document.getElementById("devices");
    for (const name of Object.keys(devices)) {
      const d = devices[name];
      const row = document.createElement("tr");
      row.dataset.device = name;
      cell(row, name);
      cell(row, d.connected ? "connected" : "DOWN", d.connected ? "up" : "down");
      cell(row, d.errors);
      cell(row, d.last_seen);
      cell(row, d.detail);
      const old = deviceRows.get(name);
      if (old) old.replaceWith(row); else tbody.appendChild(row);
      deviceRows.set(name, row);
    }
  }
  function decisionRow(d) {
    const row = document.createElement("tr");
    cell(row, (d.ts || "").slice(11, 23));
    cell(row, `${d.tracking_id}/${d.seq}`);
    cell(row, d.barcode);
    cell(row, d.destination);
    cell(row, d.chute);
    cell(row, d.reason, d.reason === "ok" ? "" : "down");
    cell(row, d.recirculations);
    cell(row, d.outcome || "");
    return row;
  }
  function renderDecisions(list) {
    const tbody = document.getElementById("decisions");
    for (const d of list) {
      const key = `${d.line}|${d.tracking_id}|${d.seq}`;
      const row = decisionRow(d);
      const old = decisions.get(key);
      if (old) old.replaceWith(row); else tbody.prepend(row);
      decisions.set(key, row);
    }
    while (tbody.children.length > 50) {
      const last = tbody.lastElementChild;
      for (const [key, row] of decisions) if (row === last) { decisions.delete(key); break; }
      last.remove();
    }
  }
  function renderCharts(ch) {
    const { barChart } = window.sorterdCharts;
    barChart(document.getElementById("chart-items"), ch.minutes,
      [{ name: "items/h", values: ch.items_per_h, colour: "#3d8bfd" }], { title: "items/h" });
    const names = Object.keys(ch.reasons);
    barChart(document.getElementById("chart-reasons"), ch.minutes,
      names.map((r) => ({ name: r, values: ch.reasons[r], colour: REASON_COLOURS[r] || "#999" })),
      { title: "decisions by reason" });
    const totals = document.getElementById("reason-totals");
    totals.replaceChildren(...names.map((r) => {
      const span = document.createElement("span");
      const sw = document.createElement("i");
      sw.className = "swatch";
      sw.style.background = REASON_COLOURS[r] || "#999";
      span.append(sw, `${r}: ${ch.reasons[r].reduce((a, b) => a + b, 0).toLocaleString("en")}`);
      return span;
    }));
  }
  function renderHub(lines) {
    const hub = document.getElementById("hub");
    hub.replaceChildren(...lines.map((s) => {
      const card = document.createElement("article");
      card.className = "card";
      card.dataset.state = s.state;
      card.dataset.line = s.prefix;
      const h = document.createElement("h3");
      const a = document.createElement("a");
      a.href = `/?line=${encodeURIComponent(s.prefix)}`;
      a.textContent = s.prefix;
      h.appendChild(a);
      const dl = document.createElement("dl");
      const c = s.chutes;
      for (const [k, v] of [["state", (s.state || "unknown").toUpperCase()], ["items/h", num(s.items_per_h)],
        ["read rate", pct(s.read_rate)], ["sort rate", pct(s.sort_rate)],
        ["chutes", `${c.ok} ok, ${c.full} full, ${c.disabled} disabled, ${c.fault} fault`],
        ["devices down", s.devices_down.length ? s.devices_down.join(", ") : "none"]]) {
        const dt = document.createElement("dt"); dt.textContent = k;
        const dd = document.createElement("dd"); dd.textContent = v;
        dl.append(dt, dd);
      }
      const bar = document.createElement("div");
      bar.className = "bar";
      const total = c.ok + c.full + c.disabled + c.fault || 1;
      for (const st of ["ok", "full", "disabled", "fault"]) {
        const part = document.createElement("span");
        part.dataset.state = st;
        part.style.width = `${(100 * c[st]) / total}%`;
        bar.appendChild(part);
      }
      card.append(h, dl, bar);
      return card;
    }));
  }

  function render() {
    const data = pending;
    pending = null;
    const t0 = performance.now();
    showBroker(data.broker);
    if (data.line) renderKpi(data.line);
    if (data.chutes && (view === "wall" || data.full)) renderChutes(data.chutes, data.full);
    if (data.devices) renderDevices(data.devices);
    if (data.decisions && data.decisions.length) renderDecisions(data.decisions);
    if (data.charts) renderCharts(data.charts);
    if (data.hub) renderHub(data.hub);
    perf.renders += 1;
    perf.renderMs += performance.now() - t0;
  }

  function merge(into, data) {
    if (!into) return data;
    // Later values win; lists add up (a full snapshot replaces what came before it).
    const out = Object.assign({}, into, data);
    if (!data.full && into.chutes && data.chutes) out.chutes = into.chutes.concat(data.chutes);
    out.full = into.full || data.full;
    if (into.chutes && data.full) out.chutes = data.chutes;
    out.devices = Object.assign({}, into.devices, data.devices);
    out.decisions = (into.decisions || []).concat(data.decisions || []);
    return out;
  }

  // --- the stream --------------------------------------------------------------------------
  function connect() {
    const url = `/api/events?line=${encodeURIComponent(line)}&view=${encodeURIComponent(view)}`;
    source = new EventSource(url);
    source.onopen = () => { lastHeard = Date.now(); };
    source.onmessage = (message) => {
      const t0 = performance.now();
      lastHeard = Date.now();
      serverUp = true;
      perf.events += 1;
      const first = pending === null;
      pending = merge(pending, JSON.parse(message.data));
      if (first) requestAnimationFrame(render);
      perf.handleMs += performance.now() - t0;
    };
    source.addEventListener("alive", () => { lastHeard = Date.now(); });
    source.onerror = () => {
      serverUp = false;
      setLink("server-down", "disconnected: the console server is not answering");
      if (source.readyState === EventSource.CLOSED) {
        // Refused (signed out, or a console restarted with another key) or gone: ask.
        fetch("/api/session", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) window.location.assign("/login");
        }).catch(() => {}).finally(() => setTimeout(reconnect, 1000));
      }
    };
  }
  function reconnect() {
    if (source) source.close();
    connect();
  }
  setInterval(() => {
    if (lastHeard && Date.now() - lastHeard > SILENCE_MS) {
      serverUp = false;
      setLink("server-down", "disconnected: nothing from the console server");
      lastHeard = Date.now();
      reconnect();
    }
  }, 5000);

  // --- commands ----------------------------------------------------------------------------
  const dialog = document.getElementById("chute-dialog");
  let dialogChute = null;
  function openChute(n) {
    dialogChute = n;
    const c = chutes.get(n);
    text("chute-title", `Chute ${n}`);
    text("chute-detail", c ? `${STATE_TEXT[c.state] || c.state}, ${c.destination || "no destination"}, ${c.count} items` : "");
    text("chute-rights", role === "operator" ? "" : "You are a viewer: the console refuses commands from viewers.");
    const answer = document.getElementById("chute-answer");
    answer.textContent = "";
    answer.className = "answer";
    if (typeof dialog.showModal === "function") dialog.showModal(); else dialog.setAttribute("open", "");
  }
  dialog.querySelectorAll("button[data-action]").forEach((button) => {
    button.addEventListener("click", () => command(dialogChute, button.dataset.action));
  });
  async function command(n, action) {
    const answer = document.getElementById("chute-answer");
    answer.className = "answer";
    answer.textContent = `${action} chute ${n}...`;
    let status = 0;
    let result = {};
    try {
      const r = await fetch(`/api/chutes/${n}/${action}?line=${encodeURIComponent(line)}`, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
      });
      status = r.status;
      result = await r.json();
    } catch (e) {
      result = { ok: false, reason: "the console server is not answering" };
    }
    if (status === 200 && result.ok) {
      answer.className = "answer done";
      answer.textContent = `done: ${result.command} chute ${result.chute}`;
    } else {
      answer.className = "answer refused";
      answer.textContent = `refused${status ? ` (${status})` : ""}: ${result.reason || "?"}`;
    }
    answer.dataset.status = String(status);
  }

  // --- search ------------------------------------------------------------------------------
  const form = document.getElementById("search-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = document.getElementById("search-code").value.trim();
    if (!code) return;
    const note = document.getElementById("search-note");
    const tbody = document.getElementById("search-results");
    note.textContent = "searching...";
    try {
      const r = await fetch(`/api/search?code=${encodeURIComponent(code)}`, { credentials: "same-origin" });
      const found = await r.json();
      if (r.status !== 200) { note.textContent = `search failed (${r.status}): ${found.reason}`; return; }
      const where = found.source === "archive" ? "the archive" : "the lines' recent decisions";
      note.textContent = `${found.rows.length} found in ${where}${found.note ? `: ${found.note}` : ""}`;
      tbody.replaceChildren(...found.rows.map((d) => {
        const row = document.createElement("tr");
        row.dataset.tracking = `${d.tracking_id}/${d.seq}`;
        cell(row, d.ts);
        cell(row, d.line);
        cell(row, d.kind);
        cell(row, `${d.tracking_id}/${d.seq}`);
        cell(row, (d.codes || []).join(";") || d.barcode);
        cell(row, d.destination);
        cell(row, d.kind === "result" ? d.chute_actual : d.chute);
        const what = d.kind === "result" ? d.outcome
          : `${d.reason}${d.outcome ? `, ${d.outcome}` : ""}${d.source ? ` (pre-advice: ${d.source})` : ""}`;
        cell(row, what);
        return row;
      }));
    } catch (e) {
      note.textContent = "the console server is not answering";
    }
  });

  connect();
})();
