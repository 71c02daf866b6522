/* microseg dashboard: fetches /v1/dashboard/... JSON and draws tables and Plotly charts.
   Data is only ever inserted as text (textContent), never as HTML. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const body = document.body;
  const COLORS = ["#2458a6", "#e07b39", "#2e8b57", "#c0392b", "#7b5ea7", "#8c6d31", "#d6619e", "#4aa3a2"];

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) {
      location.href = "/dashboard/login?next=" + enc(location.pathname + location.search);
      throw new Error("login required");
    }
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.detail) || r.status + " " + r.statusText);
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return v.toLocaleString("en");
      return v.toLocaleString("en", { maximumSignificantDigits: 4 });
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "object") return JSON.stringify(v);
    const text = String(v);
    const iso = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(:\d\d(\.\d+)?)?$/.exec(text);
    if (iso) return iso[2] === "00:00" && !iso[4] ? iso[1] : iso[1] + " " + iso[2];
    return text;
  }

  /* cols: [{key, label, num, href(row), format(value, row)}] */
  function table(id, rows, cols) {
    const t = $(id);
    t.replaceChildren();
    const head = el("tr", {}, ...cols.map((c) => el("th", { text: c.label || c.key })));
    t.append(el("thead", {}, head));
    const tb = el("tbody");
    if (!rows.length) tb.append(el("tr", {}, el("td", { colspan: String(cols.length), class: "muted", text: "nothing yet" })));
    for (const row of rows) {
      tb.append(el("tr", {}, ...cols.map((c) => {
        const text = c.format ? c.format(row[c.key], row) : fmt(row[c.key]);
        const cell = el("td", c.num ? { class: "num" } : {});
        cell.append(c.href ? el("a", { href: c.href(row), text }) : text);
        return cell;
      })));
    }
    t.append(tb);
  }

  function plot(id, traces, layout) {
    const node = $(id);
    const base = {
      margin: { t: 20, r: 20, b: 70, l: 70 },
      font: { family: "system-ui, sans-serif", size: 12 },
      colorway: COLORS,
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
    };
    return Plotly.newPlot(node, traces, Object.assign(base, layout || {}), { displayModeBar: false, responsive: true })
      .then(() => { node.dataset.rendered = "1"; });
  }

  function emptyChart(id, message) {
    const node = $(id);
    node.replaceChildren(el("p", { class: "muted", text: message }));
    node.dataset.rendered = "empty";
  }

  function groupBy(rows, key) {
    const out = new Map();
    for (const r of rows) {
      if (!out.has(r[key])) out.set(r[key], []);
      out.get(r[key]).push(r);
    }
    return out;
  }

  const segmentLink = (r) => "/dashboard/segments/" + enc(r.segment);
  const profileLink = (r) => "/dashboard/profiles?ref=" + enc(r.profile_id);

  function trendChart(id, trend) {
    if (!trend.length) return emptyChart(id, "no membership history yet");
    const traces = [...groupBy(trend, "segment")].map(([name, rows]) => ({
      type: "scatter", mode: "lines", name, line: { shape: "hv", width: 2 },
      x: rows.map((r) => r.period), y: rows.map((r) => r.size),
      customdata: rows.map((r) => [r.entered, r.exited]),
      hovertemplate: name + ": %{y} members (+%{customdata[0]} / -%{customdata[1]})<extra></extra>",
    }));
    return plot(id, traces, { yaxis: { title: { text: "members" }, rangemode: "tozero" }, showlegend: traces.length > 1 });
  }

  // ------------------------------------------------------------------ pages
  async function overview() {
    const d = await api("/v1/dashboard/overview");
    $("counts").replaceChildren(...Object.entries(d.counts).map(([k, v]) =>
      el("div", { class: "card" }, el("div", { class: "v", text: fmt(v) }), el("div", { class: "k", text: k.replace(/_/g, " ") }))));
    table("segments-table", d.segments, [
      { key: "segment", href: segmentLink }, { key: "size", num: true }, { key: "status" },
      { key: "as_of", label: "as of" }, { key: "computed_at", label: "computed" },
    ]);
    const top = [...d.segments].sort((a, b) => b.size - a.size).slice(0, 30);
    if (!top.length) return emptyChart("chart-sizes", "no segments computed yet");
    return plot("chart-sizes", [{ type: "bar", x: top.map((r) => r.segment), y: top.map((r) => r.size), marker: { color: COLORS[0] } }],
      { yaxis: { title: { text: "members" } } });
  }

  async function segments() {
    const load = async () => {
      const d = await api("/v1/dashboard/segments?freq=" + enc($("freq").value));
      table("segments-table", d.segments, [
        { key: "segment", href: segmentLink }, { key: "size", num: true }, { key: "status" },
        { key: "min_size", label: "min size", num: true }, { key: "as_of", label: "as of" },
      ]);
      await trendChart("chart-trend", d.trend);
      const o = d.overlap;
      if (o.segments.length < 2) return emptyChart("chart-overlap", "overlap needs two non-empty segments");
      return plot("chart-overlap", [{
        type: "heatmap", x: o.segments, y: o.segments, z: o.jaccard, zmin: 0, zmax: 1,
        customdata: o.both, colorscale: "Blues", reversescale: true,
        texttemplate: "%{z:.2f}", textfont: { size: 12 },
        hovertemplate: "%{y} ∩ %{x}<br>Jaccard %{z:.3f}<br>%{customdata} profiles in both<extra></extra>",
      }], { margin: { t: 20, r: 20, b: 140, l: 160 }, xaxis: { tickangle: -40 } });
    };
    $("freq").addEventListener("change", () => load().catch((e) => showError(e.message)));
    return load();
  }

  async function segment() {
    const name = body.dataset.segment;
    const d = await api("/v1/dashboard/segments/" + enc(name));
    $("segment-description").textContent = d.description || "";
    $("segment-facts").replaceChildren(...[["size", d.size], ["status", d.status], ["as of", d.as_of], ["computed", d.computed_at]]
      .map(([k, v]) => el("div", { class: "card" }, el("div", { class: "v", text: fmt(v) }), el("div", { class: "k", text: k }))));
    $("definition").textContent = JSON.stringify(d.definition, null, 2);
    table("members-table", d.members, [{ key: "profile_id", label: "profile", href: profileLink }, { key: "entered_at", label: "entered" }]);
    await trendChart("chart-trend", d.trend);
    const k = await api("/v1/dashboard/kpis?freq=W&periods=4&metric=all&segment=" + enc(name));
    if (!k.available) { $("kpi-note").textContent = k.reason; return; }
    $("kpi-note").textContent = (k.notes || []).join(" · ");
    const rows = k.rows.filter((r) => r.segment === name);
    const periods = [...new Set(rows.map((r) => r.period))].sort().slice(-4);
    const pivot = [...groupBy(rows, "metric")].map(([metric, rs]) => {
      const row = { metric };
      for (const r of rs) if (periods.includes(r.period)) row[r.period] = r.value;
      return row;
    });
    table("kpi-table", pivot, [{ key: "metric" }, ...periods.map((p) => ({ key: p, label: fmt(p), num: true }))]);
  }

  function whyTree(node) {
    const label = node.path + ": " + node.condition + ("value" in node ? " = " + JSON.stringify(node.value) : "");
    const li = el("li", { class: node.passed ? "pass" : "fail", text: label });
    if (node.children) li.append(el("ul", {}, ...node.children.map(whyTree)));
    return li;
  }

  async function explainInto(container, pid, name) {
    const d = await api("/v1/dashboard/profiles/" + enc(pid) + "/explain/" + enc(name));
    container.className = "why " + (d.member ? "member" : "nonmember");
    container.replaceChildren(
      el("h4", {}, el("a", { href: "/dashboard/segments/" + enc(name), text: name }), d.member ? " — member" : " — not a member"),
      el("ul", {}, whyTree(d.tree)));
  }

  async function profile() {
    const ref = body.dataset.ref;
    if (!ref) return;
    const found = await api("/v1/dashboard/profiles?q=" + enc(ref));
    if (!found.items.length) { showError("no profile matches '" + ref + "'"); return; }
    if (found.items.length > 1) {
      $("matches").replaceChildren(...found.items.map((m) =>
        el("li", {}, el("a", { href: profileLink(m), text: m.profile_id }), " (" + m.id_key + ")")));
      return;
    }
    const pid = found.items[0].profile_id;
    const d = await api("/v1/dashboard/profiles/" + enc(pid));
    $("profile").hidden = false;
    $("profile-title").textContent = d.profile_id;
    const kv = (obj) => Object.entries(obj || {}).map(([name, value]) => ({ name, value }));
    table("traits-table", kv(d.traits), [{ key: "name", label: "trait" }, { key: "value" }]);
    table("attributes-table", kv(d.attributes), [{ key: "name", label: "attribute" }, { key: "value" }]);
    table("identities-table", d.identities, [{ key: "id_key", label: "id" }, { key: "first_seen" }, { key: "last_seen" }, { key: "linked_by" }]);
    const events = d.events.map((e) => {
      const { ts, event_type, session_id, source, event_id, ...rest } = e;
      return { ts, event_type, session_id, properties: Object.entries(rest).map(([k, v]) => k + "=" + fmt(v)).join(", ") };
    });
    table("events-table", events, [{ key: "ts", label: "time" }, { key: "event_type", label: "event" }, { key: "session_id", label: "session" }, { key: "properties" }]);
    const why = $("why");
    why.replaceChildren();
    if (!d.segments.length) why.append(el("p", { class: "muted", text: "in no segment" }));
    const pending = d.segments.map((name) => {
      const box = el("div", { class: "why", text: name + ": explaining…" });
      why.append(box);
      return explainInto(box, pid, name).catch((e) => {
        box.className = "why nonmember";
        box.textContent = name + ": cannot explain (" + e.message + ")";
      });
    });
    const others = d.all_segments.filter((s) => !d.segments.includes(s));
    $("not-member").replaceChildren(...others.map((name) => el("li", {},
      el("button", {
        type: "button", text: name + ": why not?", "data-segment": name,
        onclick: (ev) => {
          const box = el("div", { class: "why", text: "explaining…" });
          ev.target.closest("li").replaceWith(box);
          why.append(box);
          explainInto(box, pid, name).catch((e) => showError(e.message));
        },
      }))));
    await Promise.all(pending);
  }

  async function experiments() {
    const list = await api("/v1/dashboard/experiments");
    table("experiments-table", list.items, [
      { key: "experiment_key", label: "experiment", href: (r) => "/dashboard/experiments/" + enc(r.experiment_key) },
      { key: "status" }, { key: "control" }, { key: "assigned", num: true }, { key: "exposed", num: true },
      { key: "planned_per_arm", label: "planned per arm", num: true }, { key: "created_at", label: "created" },
    ]);
    const key = body.dataset.experiment;
    if (!key) return;
    const load = async () => {
      const d = await api("/v1/dashboard/experiments/" + enc(key) + "?event=" + enc($("event").value));
      const notes = [];
      if (d.message) notes.push(d.message);
      if (d.control) notes.push("control: " + d.control);
      if (d.srm) notes.push("sample ratio " + (d.srm.mismatch ? "MISMATCH" : "ok") + " (p = " + fmt(d.srm.p_value) + ")");
      if (d.horizon && !d.horizon.reached) notes.push(d.horizon.message);
      $("experiment-notes").textContent = notes.join(" · ");
      const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + " %");
      table("arms-table", d.arms, [
        { key: "variant" }, { key: "n", label: "exposed", num: true }, { key: "conversions", num: true },
        { key: "rate", label: "conversion rate", num: true, format: pct },
        { key: "revenue_per_user", label: "revenue / user", num: true },
        { key: "chance_to_win", label: "chance to win", num: true, format: pct },
      ]);
      table("results-table", d.results, [
        { key: "variant" }, { key: "metric" }, { key: "rel_lift", label: "lift", num: true, format: pct },
        { key: "rel_ci_low", label: "CI low", num: true, format: pct }, { key: "rel_ci_high", label: "CI high", num: true, format: pct },
        { key: "p_value", label: "p", num: true }, { key: "verdict" },
      ]);
      const rs = d.results.filter((r) => r.rel_lift !== null && r.rel_ci_low !== null);
      if (!rs.length) emptyChart("chart-lift", "no lift to show yet");
      else await plot("chart-lift", [{
        type: "scatter", mode: "markers", orientation: "h",
        y: rs.map((r) => r.variant + " · " + r.metric), x: rs.map((r) => 100 * r.rel_lift),
        error_x: { type: "data", symmetric: false, array: rs.map((r) => 100 * (r.rel_ci_high - r.rel_lift)), arrayminus: rs.map((r) => 100 * (r.rel_lift - r.rel_ci_low)), thickness: 3, width: 8, color: COLORS[0] },
        marker: { size: 11, color: COLORS[1] },
        hovertemplate: "%{y}: %{x:.2f} %<extra></extra>",
      }], {
        xaxis: { title: { text: "relative lift vs control (%), " + Math.round(100 * (d.confidence || 0.95)) + " % interval" }, zeroline: true, zerolinewidth: 2, zerolinecolor: "#888" },
        yaxis: { automargin: true }, margin: { t: 20, r: 20, b: 60, l: 140 },
      });
      if (!d.arms.length) return emptyChart("chart-ctw", "no arms yet");
      return plot("chart-ctw", [{ type: "bar", x: d.arms.map((a) => a.variant), y: d.arms.map((a) => 100 * (a.chance_to_win || 0)), marker: { color: COLORS[2] } }],
        { yaxis: { title: { text: "chance to win (%)" }, range: [0, 100] } });
    };
    $("experiment-form").addEventListener("submit", (ev) => { ev.preventDefault(); load().catch((e) => showError(e.message)); });
    return load();
  }

  async function kpis() {
    const load = async () => {
      const select = $("metric");
      const metric = select.value ? "&metric=" + enc(select.value) : "";  // else the server's default
      const d = await api("/v1/dashboard/kpis?freq=" + enc($("freq").value) + metric);
      if (!d.available) { $("kpi-note").textContent = d.reason; return emptyChart("chart-kpi", "segment KPIs are not available yet"); }
      $("kpi-note").textContent = (d.notes || []).join(" · ");
      if (!select.options.length) {
        for (const m of d.metrics) select.append(el("option", { value: m, text: m.replace(/_/g, " ") }));
        select.value = d.metric || d.metrics[0] || "";
      }
      const rows = d.rows.filter((r) => r.metric === select.value);
      if (!rows.length) return emptyChart("chart-kpi", "no KPI values in this range");
      const traces = [...groupBy(rows, "segment")].map(([name, rs]) => ({
        type: "scatter", mode: "lines+markers", name, x: rs.map((r) => r.period), y: rs.map((r) => r.value),
        customdata: rs.map((r) => r.users), hovertemplate: name + ": %{y:.4g} (%{customdata} users)<extra></extra>",
      }));
      return plot("chart-kpi", traces, { yaxis: { title: { text: select.value.replace(/_/g, " ") } } });
    };
    for (const id of ["metric", "freq"]) $(id).addEventListener("change", () => load().catch((e) => showError(e.message)));
    return load();
  }

  async function attribution() {
    const load = async () => {
      const q = "?event=" + enc($("event").value) + ($("channel").value ? "&channel=" + enc($("channel").value) : "");
      const d = await api("/v1/dashboard/attribution" + q);
      const errs = Object.entries(d.errors).map(([m, e]) => m + ": " + e);
      $("attribution-note").textContent = [d.journeys + " journeys, " + d.converted_journeys + " converted, " + d.touchpoints + " touchpoints on '" + d.channel_column + "'", ...errs].join(" · ");
      const metric = $("metric").value;
      table("attribution-table", d.credit, [{ key: "model" }, { key: "channel" }, { key: "conversions", num: true }, { key: "value", num: true }, { key: "share", num: true }]);
      if (!d.credit.length) return emptyChart("chart-attribution", "no converted journeys in this window");
      const traces = [...groupBy(d.credit, "model")].map(([model, rs]) => ({ type: "bar", name: model, x: rs.map((r) => r.channel), y: rs.map((r) => r[metric]) }));
      return plot("chart-attribution", traces, { barmode: "group", yaxis: { title: { text: metric } } });
    };
    $("attribution-form").addEventListener("submit", (ev) => { ev.preventDefault(); load().catch((e) => showError(e.message)); });
    $("metric").addEventListener("change", () => load().catch((e) => showError(e.message)));
    return load();
  }

  const PAGES = { overview, segments, segment, profile, experiments, kpis, attribution };
  const run = PAGES[body.dataset.page];
  if (run) {
    run().then(() => { body.dataset.ready = "1"; }, (e) => { body.dataset.ready = "error"; showError(e.message); });
  }
})();
