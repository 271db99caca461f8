// The gateway's A/B dashboard. Plain JS, no build step; charts by the vendored uPlot.
// Captured text is only ever set with textContent: nothing from the API becomes HTML.
"use strict";
(function () {
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"];
  const REFRESH_MS = { "15m": 15000, "1h": 15000, "24h": 60000, "7d": 60000 };
  const MAX_JSON_CHARS = 200000;
  // uPlot's tick formats (smallest tick step, format, and the extra line when the day or year
  // changes), in 24-hour time.
  const TIME_AXIS = [
    [3600 * 24 * 365, "{YYYY}", null, null, null, null, null, null, 1],
    [3600 * 24 * 28, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [3600 * 24, "{D} {MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [3600, "{HH}:{mm}", "\n{D} {MMM}", null, "\n{D} {MMM}", null, null, null, 1],
    [60, "{HH}:{mm}", "\n{D} {MMM}", null, "\n{D} {MMM}", null, null, null, 1],
    [1, "{HH}:{mm}:{ss}", "\n{D} {MMM}", null, "\n{D} {MMM}", null, null, null, 1],
  ];

  const params = new URLSearchParams(window.location.search);
  const state = {
    window: params.get("window") || "1h",
    start: params.get("start"),
    end: params.get("end"),
    colors: new Map(),
    overview: null,
    pages: [null],
    next: null,
    timer: null,
    charts: [],
  };
  if (state.start) state.window = "custom";
  // For tests and curious users: the chart objects and whether the first render is done.
  const debug = (window.__dashboard = { charts: [], ready: false, renders: 0 });

  // --- small helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") Object.assign(node.style, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const nf = new Intl.NumberFormat("en-US");
  const count = (n) => (n === null || n === undefined ? "—" : nf.format(n));

  function ms(value) {
    if (value === null || value === undefined) return el("span", { class: "dim" }, "—");
    if (value >= 1000) return [(value / 1000).toFixed(value >= 10000 ? 1 : 2), el("span", { class: "unit" }, " s")];
    return [value >= 10 ? value.toFixed(0) : value.toFixed(1), el("span", { class: "unit" }, " ms")];
  }
  function msText(value) {
    if (value === null || value === undefined) return "";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : value.toFixed(value >= 10 ? 0 : 1) + " ms";
  }
  function usd(value) {
    if (value === null || value === undefined) return el("span", { class: "dim" }, "—");
    if (value === 0) return "$0";
    if (value >= 100) return "$" + nf.format(Math.round(value));
    if (value >= 1) return "$" + value.toFixed(2);
    return "$" + value.toPrecision(2);
  }
  function pct(value, digits) {
    if (value === null || value === undefined) return el("span", { class: "dim" }, "—");
    if (value === 0) return "0%";
    const d = digits === undefined ? (value < 0.1 ? 1 : 0) : digits;
    return (value * 100).toFixed(d) + "%";
  }
  function signed(value, digits) {
    const text = Math.abs(value).toFixed(digits);
    return (value > 0 ? "+" : value < 0 ? "−" : "±") + text;
  }
  function score(value) {
    return value < 0 ? "−" + Math.abs(value).toFixed(2) : value.toFixed(2);
  }
  function pValue(p) {
    if (p === null || p === undefined) return "";
    if (p < 0.001) return "p < 0.001";
    return "p = " + (p < 0.01 ? p.toFixed(4) : p.toFixed(3));
  }
  function when(iso) {
    const date = new Date(iso);
    const today = new Date();
    const time = date.toLocaleTimeString("en-GB", { hour12: false });
    if (date.toDateString() === today.toDateString()) return time;
    return date.toLocaleDateString("en-GB", { month: "short", day: "numeric" }) + " " + time;
  }

  function day(iso) {
    const date = new Date(iso);
    return date.toLocaleDateString("en-GB", { month: "short", day: "numeric" }) + " " +
      date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
  }

  function colorOf(variant) {
    if (!state.colors.has(variant)) state.colors.set(variant, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(variant);
  }
  function withAlpha(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  function windowParams() {
    if (state.window === "custom") {
      const out = { start: state.start };
      if (state.end) out.end = state.end;
      return out;
    }
    return { window: state.window };
  }

  async function api(path, extra) {
    const query = new URLSearchParams({ ...windowParams(), ...(extra || {}) });
    for (const [k, v] of [...query.entries()]) if (v === "" || v === "null") query.delete(k);
    const response = await fetch(`/dashboard/api/${path}?${query}`, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/dashboard");
      throw new Error("signed out");
    }
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    return body;
  }

  function banner(message) {
    const node = document.getElementById("banner");
    node.textContent = message || "";
    node.hidden = !message;
  }

  // --- capture health ------------------------------------------------------------------------

  function stat(label, value, sub, level, small) {
    return el("div", { class: `stat ${level || ""}` },
      el("div", { class: "label" }, label),
      el("div", { class: small ? "value small" : "value" }, value),
      el("div", { class: "sub" }, sub || "\u00a0"));
  }

  function renderHealth(health) {
    const box = document.getElementById("health");
    const c = health.capture;
    const s = health.store;
    const cards = [];
    if (!c.enabled) {
      cards.push(stat("Capture", "off", "capture.enabled is false", "warn"));
    } else {
      const fill = c.queue_size ? c.queue_depth / c.queue_size : 0;
      cards.push(stat("Queue depth", count(c.queue_depth), `of ${count(c.queue_size)}`, fill > 0.9 ? "bad" : fill > 0.5 ? "warn" : "ok"));
      cards.push(stat("Written", count(c.written), "since start", "ok"));
      cards.push(stat("Dropped", count(c.dropped), "queue full", c.dropped > 0 ? "bad" : "ok"));
      cards.push(stat("Retried", count(c.retried), "batch retries", c.retried > 0 ? "warn" : "ok"));
      cards.push(stat("Failed", count(c.failed), "rejected rows", c.failed > 0 ? "bad" : "ok"));
    }
    if (s) {
      cards.push(stat("Rows in store", count(s.calls), `${count(s.feedback)} feedback · ${s.dialect}`, "ok"));
      cards.push(stat("Stored since", s.oldest ? day(s.oldest) : "—", s.newest ? "newest " + when(s.newest) : "", "ok", true));
    }
    box.replaceChildren(...cards);
  }

  // --- the variant table -----------------------------------------------------------------------

  function feedbackCell(fb, color) {
    // The mean over a bar on the scale -1 … 1 (the interval shaded, the mean marked); the
    // interval and the number of calls with feedback below.
    if (!fb || !fb.n) return el("td", { class: "num sep dim" }, "no feedback");
    const pos = (v) => ((Math.max(-1, Math.min(1, v)) + 1) / 2) * 100;
    const bar = fb.low === null ? null : el("span", { class: "ci-bar", title: "95% interval on the scale −1 … 1" },
      el("i", { style: { left: `${pos(fb.low)}%`, width: `${Math.max(1, pos(fb.high) - pos(fb.low))}%`, background: color } }),
      el("b", { style: { left: `calc(${pos(fb.mean)}% - 1px)`, background: color } }));
    const interval = fb.low === null ? "needs 2+" : `${score(fb.low)} … ${score(fb.high)}`;
    return el("td", { class: "num sep", title: `${fb.n} calls with feedback (a call scored twice counts once); 95% interval ${interval}` },
      el("span", { class: "stack" },
        el("span", { class: "fb" }, bar, el("span", { class: "mean" }, score(fb.mean))),
        el("span", { class: "sub" }, `${interval} · n ${count(fb.n)}`)));
  }

  function verdictCell(test, kind, isReference, tooFewText) {
    const sep = kind === "feedback" ? " sep" : "";
    if (isReference) return el("td", { class: `num dim${sep}` }, "—");
    if (!test) return el("td", { class: `num dim${sep}`, title: tooFewText }, "too few");
    let chipText, better, detail;
    if (kind === "feedback") {
      chipText = signed(test.difference, 2);
      better = test.difference > 0;
      detail = `Welch's t-test: difference ${signed(test.difference, 3)} [${signed(test.low, 3)}, ${signed(test.high, 3)}]` +
        (test.t === null ? "" : `, t = ${test.t.toFixed(2)}, df = ${test.df.toFixed(1)}`) + `, ${pValue(test.p)}`;
    } else {
      const ratio = test.median_ratio;
      chipText = ratio === null ? "n/a" : `${ratio.toFixed(2)}× median`;
      better = test.prob_slower < 0.5;
      detail = `Mann-Whitney U = ${nf.format(Math.round(test.u))}, z = ${test.z.toFixed(2)}, ${pValue(test.p)}; ` +
        `P(a call is slower than the reference's) = ${(test.prob_slower * 100).toFixed(1)}%`;
    }
    const level = test.significant ? (better ? "good" : "bad") : "";
    return el("td", { class: `num${sep}`, title: detail + (test.significant ? " (significant)" : " (not significant)") },
      el("span", { class: "stack" },
        el("span", { class: `chip ${level}` }, chipText),
        el("span", { class: `sub ${test.significant ? "sig" : ""}` }, pValue(test.p))));
  }

  function variantTable(route, approx) {
    const head = el("thead", {},
      el("tr", {},
        el("th", { rowspan: 2 }, "Variant"),
        el("th", { class: "num", rowspan: 2 }, "Calls"),
        el("th", { class: "num", rowspan: 2 }, "Share"),
        el("th", { class: "group", colspan: 2, title: approx ? "From hourly histograms (2% bins)" : "" }, approx ? "Latency ≈" : "Latency"),
        el("th", { class: "group", colspan: 2, title: approx ? "From hourly histograms (2% bins)" : "" }, approx ? "TTFT ≈" : "TTFT"),
        el("th", { class: "num sep", rowspan: 2, title: "Mean cost of the priced calls, times 1,000" }, "Cost / 1k"),
        el("th", { class: "num", rowspan: 2, title: "Failed calls: HTTP status not 1xx–3xx, or an error such as a stream cut mid-way" }, "Errors"),
        el("th", { class: "num sep", rowspan: 2, title: "Mean score per call (−1 … 1) with its 95% confidence interval" }, "Feedback"),
        el("th", { class: "group", colspan: 2 }, `vs ${route.reference || "reference"}`)),
      el("tr", {},
        el("th", { class: "num sep" }, "p50"), el("th", { class: "num" }, "p95"),
        el("th", { class: "num sep" }, "p50"), el("th", { class: "num" }, "p95"),
        el("th", { class: "num sep", title: "Difference in mean feedback; Welch's t-test" }, "Feedback"),
        el("th", { class: "num", title: "Median latency ratio; Mann-Whitney U test" }, "Latency")));
    const rows = route.variants.map((v) => {
      const color = colorOf(v.variant);
      const vs = v.vs_reference || {};
      const errorRate = v.error_rate;
      return el("tr", { "data-variant": v.variant },
        el("td", {},
          el("span", { class: "variant-name" },
            el("span", { class: "swatch", style: { background: color } }),
            v.variant,
            v.reference ? el("span", { class: "badge ref", title: "The variant the others are compared with" }, "reference") : null,
            v.calls && v.shadow_calls === v.calls ? el("span", { class: "badge", title: "Only shadow calls: it answers no user" }, "shadow") : null,
            v.weight !== null && v.weight !== undefined ? el("span", { class: "weight", title: "Configured weight" }, `w ${v.weight}`) : null)),
        el("td", { class: "num", title: v.shadow_calls ? `${count(v.live_calls)} live, ${count(v.shadow_calls)} shadow` : "" },
          count(v.calls)),
        el("td", { class: "num" }, pct(v.share, 1),
          el("span", { class: "share-bar" }, el("i", { style: { width: `${(v.share || 0) * 100}%`, background: color } }))),
        el("td", { class: "num sep" }, ms(v.latency_ms.p50)),
        el("td", { class: "num" }, ms(v.latency_ms.p95)),
        el("td", { class: "num sep" }, ms(v.ttft_ms.p50)),
        el("td", { class: "num" }, ms(v.ttft_ms.p95)),
        el("td", { class: "num sep", title: v.priced_calls ? `$${v.cost_usd.toFixed(4)} over ${count(v.priced_calls)} priced calls` : "no priced calls" }, usd(v.cost_per_1k_calls_usd)),
        el("td", { class: `num ${errorRate > 0.05 ? "errors-high" : ""}`, title: `${count(v.errors)} failed calls` }, pct(errorRate, 1)),
        feedbackCell(v.feedback, color),
        verdictCell(vs.feedback, "feedback", v.reference, "Needs 2+ calls with feedback on both sides"),
        verdictCell(vs.latency, "latency", v.reference, "Needs 10+ successful calls on both sides"));
    });
    return el("div", { class: "table-wrap" }, el("table", { class: "variants" }, head, el("tbody", {}, rows)));
  }

  // --- charts ------------------------------------------------------------------------------------

  function axisMs(self, ticks) {
    return ticks.map((v) => (v >= 1000 ? (v / 1000).toFixed(v % 1000 ? 1 : 0) + " s" : v + " ms"));
  }

  // uPlot draws lines between values, so a value without a neighbour (the first calls of a
  // fresh install, a lone busy minute) would not show at all: such values get a point.
  function lonePoints(values, color) {
    const present = (i) => i >= 0 && i < values.length && values[i] !== null && values[i] !== undefined;
    const lone = [];
    for (let i = 0; i < values.length; i++) {
      if (present(i) && !present(i - 1) && !present(i + 1)) lone.push(i);
    }
    return { show: false, size: 7, width: 1, stroke: color, fill: color, filter: () => (lone.length ? lone : null) };
  }

  function latencyChart(target, routeSeries, buckets) {
    const series = [{}];
    const data = [buckets];
    for (const v of routeSeries.variants) {
      const color = colorOf(v.variant);
      series.push({ label: `${v.variant} p50`, stroke: color, width: 2, spanGaps: false, points: lonePoints(v.p50_ms, color), value: (u, x) => msText(x) });
      data.push(v.p50_ms);
      series.push({ label: `${v.variant} p95`, stroke: color, width: 1.25, dash: [5, 4], spanGaps: false, points: lonePoints(v.p95_ms, color), value: (u, x) => msText(x) });
      data.push(v.p95_ms);
    }
    return makeChart(target, series, data, { axes: [{}, { values: axisMs, size: 60 }], scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] } } });
  }

  function shareChart(target, routeSeries, buckets) {
    // Stacked areas: each band is a variant's share of the live calls in the bucket.
    const variants = routeSeries.variants.filter((v) => v.share.some((x) => x));
    const raw = variants.map((v) => v.share.map((x) => (x === null ? null : x * 100)));
    const empty = buckets.map((_, j) => raw.every((r) => r[j] === null));
    const running = buckets.map(() => 0);
    const data = [buckets];
    const series = [{}];
    const bands = [];
    variants.forEach((v, i) => {
      const color = colorOf(v.variant);
      const stacked = running.map((total, j) => {
        running[j] = total + (raw[i][j] || 0);
        return empty[j] ? null : running[j];
      });
      data.push(stacked);
      series.push({
        label: v.variant, stroke: color, width: 1.5, fill: withAlpha(color, 0.28), spanGaps: false,
        points: lonePoints(stacked, color),
        value: (u, x, si, di) => (di === null || raw[si - 1][di] === null ? "—" : raw[si - 1][di].toFixed(1) + "%"),
      });
      if (i > 0) bands.push({ series: [i + 1, i] });
    });
    return makeChart(target, series, data, {
      axes: [{}, { values: (u, ticks) => ticks.map((t) => t + "%"), size: 50 }],
      scales: { y: { range: [0, 100] } },
      bands,
    });
  }

  function makeChart(target, series, data, extra) {
    const width = Math.max(280, target.clientWidth);
    const options = {
      width,
      height: 220,
      series,
      cursor: { points: { size: 6 } },
      legend: { live: true },
      axes: [
        { stroke: "#6b7385", grid: { stroke: "#eef0f4" }, ticks: { stroke: "#e3e6ec" } },
        { stroke: "#6b7385", grid: { stroke: "#eef0f4" }, ticks: { stroke: "#e3e6ec" }, ...(extra.axes[1] || {}) },
      ],
      scales: { x: { time: true }, ...(extra.scales || {}) },
      bands: extra.bands || [],
    };
    options.axes[0].values = TIME_AXIS;
    const chart = new uPlot(options, data, target);
    return chart;
  }

  function destroyCharts() {
    for (const c of state.charts) c.chart.destroy();
    state.charts = [];
    debug.charts = [];
  }

  const resizer = new ResizeObserver(() => {
    for (const c of state.charts) {
      const width = Math.max(280, c.target.clientWidth);
      if (Math.abs(width - c.chart.width) > 2) c.chart.setSize({ width, height: 220 });
    }
  });

  // --- routes --------------------------------------------------------------------------------------

  function renderRoutes(overview, series) {
    destroyCharts();
    const box = document.getElementById("routes");
    if (!overview.routes.length) {
      box.replaceChildren(el("article", { class: "route" }, el("div", { class: "empty" }, "No calls in this window.")));
      return;
    }
    // Colours by variant name, first come first served, kept for the page's life.
    for (const route of overview.routes) for (const v of route.variants) colorOf(v.variant);
    const seriesByRoute = new Map(series.routes.map((r) => [r.route, r]));
    const cards = overview.routes.map((route) => {
      const meta = el("div", { class: "route-meta" },
        el("b", {}, count(route.calls)), " calls",
        route.reference ? [" · compared with ", el("b", {}, route.reference)] : null);
      const card = el("article", { class: "route", "data-route": route.route },
        el("header", {}, el("h2", {}, route.route), meta));
      if (!route.calls) {
        card.append(el("div", { class: "empty" }, "No calls to this route in the window."));
        return card;
      }
      card.append(variantTable(route, overview.source && overview.source.table !== "calls"));
      const rs = seriesByRoute.get(route.route);
      if (rs && rs.variants.length) {
        const latencyTarget = el("div", { class: "chart", "data-kind": "latency" });
        const shareTarget = el("div", { class: "chart", "data-kind": "share" });
        card.append(el("div", { class: "charts" },
          el("figure", {}, el("figcaption", {}, "Latency", el("span", { class: "legend-note" }, "p50 solid · p95 dashed")), latencyTarget),
          el("figure", {}, el("figcaption", {}, "Traffic share", el("span", { class: "legend-note" }, "live calls, shadows excluded")), shareTarget)));
        card._charts = [[latencyTarget, "latency", rs], [shareTarget, "share", rs]];
      }
      return card;
    });
    box.replaceChildren(...cards);
    // Charts after the cards are in the document, so they know their width.
    for (const card of cards) {
      for (const [target, kind, rs] of card._charts || []) {
        const chart = kind === "latency" ? latencyChart(target, rs, series.buckets) : shareChart(target, rs, series.buckets);
        const entry = { route: rs.route, kind, chart, target };
        state.charts.push(entry);
        debug.charts.push({ route: rs.route, kind, chart });
        resizer.observe(target);
      }
    }
  }

  function renderNotes(overview) {
    const t = overview.tests;
    document.getElementById("notes").replaceChildren(
      el("div", {}, `Feedback: ${t.feedback}. Latency: ${t.latency} (${t.min_latency_sample}+ calls each side). ` +
        `Significant at p < ${t.alpha}, without correction for multiple comparisons.`),
      el("div", {}, "Latency and TTFT percentiles are over calls that did not fail" +
        (overview.source && overview.source.table !== "calls" ? ` (${overview.source.percentiles})` : "") +
        "; cost per 1k calls is the mean cost of priced calls; " +
        "shadow calls count for latency, errors and cost but not for traffic share. " +
        `Window ${new Date(overview.window.start).toLocaleString("en-GB")} – ${new Date(overview.window.end).toLocaleString("en-GB")}, ` +
        `buckets of ${overview.window.bucket_s >= 3600 ? overview.window.bucket_s / 3600 + " h" : overview.window.bucket_s >= 60 ? overview.window.bucket_s / 60 + " min" : overview.window.bucket_s + " s"}; ` +
        `queries ${overview.query_ms} ms.`));
  }

  function fillFilters(overview) {
    const routeSelect = document.getElementById("filter-route");
    const variantSelect = document.getElementById("filter-variant");
    const keep = (select, values) => {
      const current = select.value;
      select.replaceChildren(el("option", { value: "" }, "all"), ...values.map((v) => el("option", { value: v }, v)));
      select.value = values.includes(current) ? current : "";
    };
    keep(routeSelect, overview.routes.map((r) => r.route));
    const chosen = overview.routes.filter((r) => !routeSelect.value || r.route === routeSelect.value);
    keep(variantSelect, [...new Set(chosen.flatMap((r) => r.variants.map((v) => v.variant)))]);
  }

  // --- last calls ------------------------------------------------------------------------------------

  function jsonBlock(value) {
    const pre = el("pre", { class: "json" });
    if (value === null || value === undefined) {
      pre.append(el("span", { class: "b" }, "null"));
      return pre;
    }
    let text = JSON.stringify(value, null, 2);
    let cut = false;
    if (text.length > MAX_JSON_CHARS) {
      text = text.slice(0, MAX_JSON_CHARS);
      cut = true;
    }
    const token = /("(?:\\u[a-fA-F0-9]{4}|\\[^u]|[^\\"])*")(\s*:)?|\b(true|false|null)\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
    let last = 0;
    for (let m; (m = token.exec(text)); ) {
      if (m.index > last) pre.append(text.slice(last, m.index));
      const kind = m[1] ? (m[2] ? "k" : "s") : m[3] ? "b" : "n";
      pre.append(el("span", { class: kind }, m[1] || m[0]));
      if (m[2]) pre.append(m[2]);
      last = token.lastIndex;
    }
    pre.append(text.slice(last));
    if (cut) pre.append(el("span", { class: "b" }, "\n… (cut at 200,000 characters)"));
    return pre;
  }

  async function openDetail(row, call) {
    const next = row.nextElementSibling;
    if (next && next.classList.contains("detail")) {
      next.remove();
      row.classList.remove("open");
      return;
    }
    row.classList.add("open");
    const body = el("div", { class: "detail-body" }, el("span", { class: "dim" }, "Loading…"));
    const detail = el("tr", { class: "detail" }, el("td", { colspan: 9 }, body));
    row.after(detail);
    try {
      const full = await api(`calls/${encodeURIComponent(call.id)}`, { window: "", start: "", end: "" });
      const feedback = full.feedback || [];
      body.replaceChildren(...[
        el("div", { class: "detail-meta" },
          el("span", {}, "id ", el("b", {}, full.id)),
          el("span", {}, "endpoint ", el("b", {}, full.endpoint)),
          el("span", {}, "upstream ", el("b", {}, full.upstream_model || "—")),
          el("span", {}, "stream ", el("b", {}, full.stream ? "yes" : "no")),
          full.user_key ? el("span", {}, "user ", el("b", {}, full.user_key)) : null,
          full.shadow_of ? el("span", {}, "shadow of ", el("b", {}, full.shadow_of)) : null,
          full.finish_reason ? el("span", {}, "finish ", el("b", {}, full.finish_reason)) : null,
          Object.keys(full.tags || {}).length ? el("span", {}, "tags ", el("b", {}, Object.entries(full.tags).map(([k, v]) => `${k}=${v}`).join(", "))) : null,
          feedback.length ? el("span", {}, "feedback ", el("b", {}, feedback.map((f) => score(f.score) + (f.label ? ` (${f.label})` : "")).join(", "))) : null),
        full.error ? el("div", { class: "detail-error" }, full.error) : null,
        el("div", { class: "json-pair" },
          el("div", {}, el("h3", {}, "Request"), jsonBlock(full.request)),
          el("div", {}, el("h3", {}, "Response"), jsonBlock(full.response)))].filter(Boolean));
    } catch (error) {
      body.replaceChildren(el("span", { class: "errors-high" }, `Could not load the call: ${error.message}`));
    }
  }

  function callRow(call) {
    const failed = call.status >= 400 || call.status < 100 || call.error;
    const row = el("tr", { class: "call", "data-id": call.id, tabindex: 0 },
      el("td", { class: "time", title: call.created_at }, el("span", { class: "caret" }, "▸"), " ", when(call.created_at)),
      el("td", { class: "mono" }, call.route),
      el("td", {}, el("span", { class: "variant-name" }, el("span", { class: "swatch", style: { background: colorOf(call.variant) } }), call.variant),
        call.shadow_of ? el("span", { class: "tag" }, "shadow") : null, call.stream ? el("span", { class: "tag" }, "stream") : null),
      el("td", {}, el("span", { class: `status ${failed ? "err" : "ok"}`, title: call.error || "" }, call.status || "—")),
      el("td", { class: "num" }, ms(call.total_ms)),
      el("td", { class: "num" }, ms(call.ttft_ms)),
      el("td", { class: "num" }, call.prompt_tokens === null ? el("span", { class: "dim" }, "—") : `${count(call.prompt_tokens)} / ${count(call.completion_tokens)}`),
      el("td", { class: "num" }, call.cost_usd === null ? el("span", { class: "dim" }, "—") : "$" + call.cost_usd.toFixed(5)),
      el("td", { class: "num" }, call.feedback === null ? el("span", { class: "dim" }, "—") : score(call.feedback)));
    row.addEventListener("click", () => openDetail(row, call));
    row.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openDetail(row, call); } });
    return row;
  }

  async function loadCalls() {
    const before = state.pages[state.pages.length - 1];
    const route = document.getElementById("filter-route").value;
    const variant = document.getElementById("filter-variant").value;
    const page = await api("calls", { limit: 25, before: before || "", route, variant });
    const tbody = document.querySelector("#calls tbody");
    if (!page.calls.length) {
      tbody.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No calls in this window.")));
    } else {
      tbody.replaceChildren(...page.calls.map(callRow));
    }
    state.next = page.next;
    document.getElementById("older").disabled = !page.next;
    document.getElementById("newer").disabled = state.pages.length <= 1;
    document.getElementById("page-label").textContent = `Page ${state.pages.length}`;
  }

  // --- refreshing ----------------------------------------------------------------------------------

  // --- students and their lineage ---------------------------------------------------------------

  function renderStudents(students) {
    const panel = document.getElementById("students-panel");
    const body = document.querySelector("#students tbody");
    body.replaceChildren();
    panel.hidden = !students.length;
    for (const s of students) {
      const lineage = s.lineage || {};
      const manifest = (lineage.export && lineage.export.manifest) || {};
      const filters = manifest.filters || {};
      const counts = manifest.counts || {};
      const data = manifest.filters
        ? `${filters.route || "any route"} / ${filters.variant || "any variant"}, ${filters.since ? day(filters.since) : "start"} – ${filters.until ? day(filters.until) : "export"}; ${counts.train ?? "?"} train, ${counts.valid ?? "?"} valid rows`
        : "unknown (registered by model name)";
      const sha = lineage.export && lineage.export.train_sha256;
      const price = lineage.price ? `${lineage.price.input}, ${lineage.price.output} (${lineage.price.source === "gpu_hour" ? "from GPU-hour" : "given"})` : "table / unknown";
      body.append(el("tr", {},
        el("td", {}, `${s.route} / ${s.variant}`),
        el("td", {}, s.model),
        el("td", {}, s.backend ? `${s.backend} ${s.job_id || ""}` : "–"),
        el("td", {}, (s.base_model || "–") + (s.parent_model ? ` (from ${s.parent_model})` : "")),
        el("td", {}, data),
        el("td", { title: sha || "" }, sha ? sha.slice(0, 12) : "–"),
        el("td", {}, price),
        el("td", {}, when(s.created_at)),
      ));
    }
  }

  async function refresh(options) {
    clearTimeout(state.timer);
    const withCalls = !options || options.calls !== false;
    try {
      const [overview, series, health, students] = await Promise.all([api("overview"), api("timeseries"), api("health"), api("students")]);
      state.overview = overview;
      banner("");
      renderHealth(health);
      renderStudents(students.students);
      renderRoutes(overview, series);
      renderNotes(overview);
      fillFilters(overview);
      const quiet = state.pages.length === 1 && !document.querySelector("tr.detail");
      if (withCalls || quiet) await loadCalls();
      document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString("en-GB", { hour12: false });
      debug.renders += 1;
      debug.ready = true;
    } catch (error) {
      if (error.message !== "signed out") banner(error.message);
    }
    const every = REFRESH_MS[state.window];
    if (every && document.getElementById("auto").checked) {
      state.timer = setTimeout(() => refresh({ calls: false }), every);
    }
  }

  function selectWindow(name) {
    state.window = name;
    for (const b of document.querySelectorAll("#windows button")) b.setAttribute("aria-pressed", String(b.dataset.window === name));
    const custom = document.getElementById("custom");
    custom.hidden = name !== "custom";
    const url = new URL(window.location.href);
    url.search = "";
    if (name !== "custom") url.searchParams.set("window", name);
    else if (state.start) {
      url.searchParams.set("start", state.start);
      if (state.end) url.searchParams.set("end", state.end);
    }
    history.replaceState(null, "", url);
    if (name === "custom" && !state.start) {
      const end = new Date();
      const start = new Date(end.getTime() - 3 * 3600 * 1000);
      custom.elements.start.value = toLocalInput(start);
      custom.elements.end.value = toLocalInput(end);
      return;
    }
    state.pages = [null];
    refresh();
  }

  function toLocalInput(date) {
    const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
    return local.toISOString().slice(0, 16);
  }

  function start() {
    for (const b of document.querySelectorAll("#windows button")) b.addEventListener("click", () => {
      if (b.dataset.window === "custom") { state.start = null; state.end = null; }
      selectWindow(b.dataset.window);
    });
    document.getElementById("custom").addEventListener("submit", (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      state.start = new Date(form.elements.start.value).toISOString();
      state.end = form.elements.end.value ? new Date(form.elements.end.value).toISOString() : null;
      selectWindow("custom");
    });
    document.getElementById("auto").addEventListener("change", () => refresh({ calls: false }));
    document.getElementById("older").addEventListener("click", () => { if (state.next) { state.pages.push(state.next); loadCalls().catch((e) => banner(e.message)); } });
    document.getElementById("newer").addEventListener("click", () => { if (state.pages.length > 1) { state.pages.pop(); loadCalls().catch((e) => banner(e.message)); } });
    document.getElementById("filter-route").addEventListener("change", () => {
      if (state.overview) fillFilters(state.overview);
      state.pages = [null];
      loadCalls().catch((e) => banner(e.message));
    });
    document.getElementById("filter-variant").addEventListener("change", () => { state.pages = [null]; loadCalls().catch((e) => banner(e.message)); });
    if (state.window === "custom" && state.start) {
      const form = document.getElementById("custom");
      form.elements.start.value = toLocalInput(new Date(state.start));
      if (state.end) form.elements.end.value = toLocalInput(new Date(state.end));
    }
    selectWindow(REFRESH_MS[state.window] || state.window === "custom" ? state.window : "1h");
  }

  start();
})();
