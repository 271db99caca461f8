// The dashboard's rollouts and savings panels. Plain JS, no build step; a page of its own
// concern beside dashboard.js (which draws the routes): it reads /dashboard/api/rollouts,
// /dashboard/api/rollouts/{route} and /dashboard/api/savings, and redraws every 15 s.
// Text from the API is only ever set with textContent.
"use strict";
(function () {
  const REFRESH_MS = 15000;
  const TIMELINE_ROWS = 60;
  const GATE_LABELS = {
    quality: "Quality (judge)",
    feedback: "Feedback",
    errors: "Errors",
    latency_p95: "Latency p95",
    ttft_p95: "TTFT p95",
    cost: "Cost",
  };
  const ACTION_LEVEL = {
    start: "", advance: "good", promote: "good", hold: "", rollback: "bad", pin: "bad", give_up: "bad", abort: "bad",
  };
  const STATUS_LEVEL = { running: "", promoted: "good", pinned: "bad", rolled_back: "bad", aborted: "bad", gave_up: "bad" };
  const debug = (window.__rollouts = { ready: false, renders: 0, routes: [] });
  let timer = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const nf = new Intl.NumberFormat("en-US");
  const unknown = (why) => el("span", { class: "dim unknown", title: why || "unknown: no price" }, "unknown");

  function num(value, digits) {
    if (value === null || value === undefined) return "–";
    if (Math.abs(value) >= 100) return nf.format(Math.round(value));
    return value.toFixed(digits === undefined ? 3 : digits);
  }
  function pct(share) {
    return share === 0 ? "0%" : (share * 100).toFixed(share < 0.1 ? 1 : 0).replace(/\.0$/, "") + "%";
  }
  function usd(value, why) {
    if (value === null || value === undefined) return unknown(why);
    const sign = value < 0 ? "−" : "";
    const v = Math.abs(value);
    if (v === 0) return "$0";
    if (v >= 100) return sign + "$" + nf.format(Math.round(v));
    if (v >= 1) return sign + "$" + v.toFixed(2);
    return sign + "$" + v.toPrecision(3);
  }
  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleString("en-GB", { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }
  function chip(text, level, title) {
    return el("span", { class: `chip ${level || ""}`, title: title || null }, text);
  }

  function windowQuery() {
    const params = new URL(window.location.href).searchParams;
    const out = new URLSearchParams();
    for (const key of ["window", "start", "end"]) if (params.get(key)) out.set(key, params.get(key));
    if (![...out.keys()].length) out.set("window", "1h");
    return out;
  }

  async function api(path, query) {
    const suffix = query ? `?${query}` : "";
    const response = await fetch(`/dashboard/api/${path}${suffix}`, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (response.status === 401) throw new Error("signed out");
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    return body;
  }

  // --- rollouts ----------------------------------------------------------------------------

  function stageName(config, stage) {
    if (!config) return `stage ${stage}`;
    if (stage >= config.stages.length) return `target ${pct(config.target)}`;
    const share = config.stages[stage];
    return share === 0 ? "shadow" : pct(share);
  }

  function stages(config, slice) {
    const steps = [...config.stages.map((_, i) => i), config.stages.length];
    return el("span", { class: "stages", title: steps.map((i) => stageName(config, i)).join(" → ") },
      steps.map((i) => el("span", {
        class: `step ${i < slice.stage ? "done" : ""} ${i === slice.stage && slice.status !== "pinned" ? "now" : ""}`,
        title: stageName(config, i),
      })));
  }

  function gateCell(gate) {
    if (!gate) return el("td", { class: "gate dim" }, "–");
    const verdict = gate.verdict === "continue" ? "hold" : gate.verdict;
    const level = verdict === "pass" ? "good" : verdict === "fail" ? "bad" : "";
    const bounds = [gate.pass_bound, gate.fail_bound].filter((v) => v !== null && v !== undefined);
    const lo = bounds.length ? Math.min(...bounds) : null;
    const hi = bounds.length ? Math.max(...bounds) : null;
    const n = gate.n_incumbent ? `n ${nf.format(gate.n_candidate)} / ${nf.format(gate.n_incumbent)}` : `n ${nf.format(gate.n_candidate)}`;
    const title = `${gate.statistic}: estimate ${num(gate.estimate)}, bounds [${num(lo)}, ${num(hi)}] `
      + `(pass at alpha ${num(gate.alpha_pass, 4)}, fail at ${num(gate.alpha_fail, 4)}), threshold ${num(gate.threshold)}; `
      + `${n} (candidate / incumbent)`;
    return el("td", { class: "gate", "data-gate": gate.name, "data-verdict": verdict, title },
      chip(verdict, level),
      el("div", { class: "gate-figures" }, `${num(gate.estimate)} [${num(lo)}, ${num(hi)}]`),
      el("div", { class: "gate-figures dim" }, `vs ${num(gate.threshold)} · ${n}`));
  }

  function costCell(cost) {
    if (!cost) return el("td", { class: "gate dim" }, "–");
    const passed = cost.verdict_pass === 1;
    const title = `cost per call: candidate ${cost.candidate_per_call ?? "unknown"}, incumbent ${cost.incumbent_per_call ?? "unknown"}; must be below ${cost.max_ratio ?? "–"} × the incumbent's`;
    return el("td", { class: "gate", "data-gate": "cost", "data-verdict": passed ? "pass" : "hold", title },
      chip(passed ? "pass" : "hold", passed ? "good" : ""),
      el("div", { class: "gate-figures" }, [usd(cost.candidate_per_call, "no calls yet"), " vs ", usd(cost.incumbent_per_call, "no calls yet")]),
      el("div", { class: "gate-figures dim" }, "per call"));
  }

  function slicesTable(detail) {
    const names = [];
    for (const s of detail.slices) for (const g of (s.gates && s.gates.gates) || []) if (!names.includes(g.name)) names.push(g.name);
    const table = el("table", { class: "slices" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Slice"), el("th", {}, "Status"), el("th", {}, "Stage"), el("th", { class: "num" }, "Share"),
        names.map((n) => el("th", {}, GATE_LABELS[n] || n)), el("th", {}, GATE_LABELS.cost), el("th", {}, "Now"))));
    const body = el("tbody");
    for (const s of detail.slices) {
      const gates = new Map(((s.gates && s.gates.gates) || []).map((g) => [g.name, g]));
      const source = s.gates_source === "live" ? "gates now" : "at its last decision";
      const reason = s.gates ? s.gates.reason : (s.latest_decision ? s.latest_decision.reason : "");
      body.append(el("tr", { "data-slice": s.name, "data-status": s.status },
        el("td", { class: "mono" }, s.name),
        el("td", {}, chip(s.status, STATUS_LEVEL[s.status])),
        el("td", {}, stages(detail.config, s), " ", s.status === "pinned" ? "incumbent only" : stageName(detail.config, s.stage)),
        el("td", { class: "num" }, pct(s.share)),
        names.map((n) => gateCell(gates.get(n))),
        costCell(s.gates && s.gates.cost),
        el("td", { class: "reason", title: source }, reason || "–", el("div", { class: "dim" }, source))));
    }
    table.append(body);
    return el("div", { class: "table-wrap" }, table);
  }

  function timeline(detail) {
    const rows = [...detail.decisions].reverse().slice(0, TIMELINE_ROWS);
    const table = el("table", { class: "timeline" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Time"), el("th", {}, "Slice"), el("th", {}, "Action"), el("th", {}, "Stage"),
        el("th", { class: "num" }, "Share"), el("th", {}, "Reason"))));
    const body = el("tbody");
    for (const d of rows) {
      const from = d.from_stage < 0 ? "–" : stageName(detail.config, d.from_stage);
      const to = d.to_stage < 0 ? "incumbent" : stageName(detail.config, d.to_stage);
      body.append(el("tr", { class: "decision", "data-action": d.action, "data-slice": d.slice },
        el("td", {}, when(d.at)),
        el("td", { class: "mono" }, d.slice),
        el("td", {}, chip(d.action.replace("_", " "), ACTION_LEVEL[d.action])),
        el("td", {}, from === to ? to : `${from} → ${to}`),
        el("td", { class: "num" }, pct(d.share)),
        el("td", { class: "reason" }, d.reason)));
    }
    if (!rows.length) body.append(el("tr", {}, el("td", { class: "empty", colspan: 6 }, "No decisions yet.")));
    table.append(body);
    const more = detail.decisions.length > TIMELINE_ROWS ? el("div", { class: "notes" }, `The newest ${TIMELINE_ROWS} of ${detail.decisions.length} decisions.`) : null;
    return [el("div", { class: "table-wrap" }, table), more];
  }

  function rolloutCard(detail) {
    const c = detail.config;
    const meta = c
      ? [el("b", {}, c.incumbent), " → ", el("b", {}, c.candidate), ` · stages ${c.stages.map((s) => (s === 0 ? "shadow" : pct(s))).join(" → ")} → ${pct(c.target)} (holdout ${pct(c.holdout)})`,
        c.slice_keys.length ? ` · slices by ${c.slice_keys.join(", ")}` : "", ` · started ${when(detail.started)}`]
      : [detail.problem || ""];
    return el("article", { class: "rollout", "data-route": detail.route, "data-status": detail.status },
      el("header", {},
        el("h3", {}, el("span", { class: "mono" }, detail.route), " ", chip(detail.status, STATUS_LEVEL[detail.status])),
        el("div", { class: "route-meta" }, meta)),
      detail.reason ? el("p", { class: "rollout-reason" }, detail.reason) : null,
      detail.slices.length ? slicesTable(detail) : el("div", { class: "empty" }, "No slice has evidence yet."),
      el("h4", {}, "Decisions"),
      timeline(detail));
  }

  async function loadRollouts() {
    const listed = (await api("rollouts")).rollouts;
    const details = await Promise.all(listed.map((r) => api(`rollouts/${encodeURIComponent(r.route)}`)));
    const panel = document.getElementById("rollouts-panel");
    const list = document.getElementById("rollouts");
    // Readable rollouts first (by route, as listed), then those this gateway cannot read.
    details.sort((a, b) => (a.problem ? 1 : 0) - (b.problem ? 1 : 0));
    list.replaceChildren(...details.map(rolloutCard));
    panel.hidden = !details.length;
    debug.routes = details.map((d) => d.route);
  }

  // --- savings -----------------------------------------------------------------------------

  function savingsRow(route, line, total) {
    const cls = total ? "total" : "";
    const note = line.unpriced_calls ? ` (${nf.format(line.unpriced_calls)} unpriced)` : "";
    const evaluation = (name) => usd(line[`${name}_cost_usd`], `${name} calls without a price`);
    return el("tr", { class: cls, "data-route": route.route, "data-day": total ? "total" : line.day },
      el("td", { class: "mono" }, total ? `${route.route} total` : route.route),
      el("td", {}, total ? "" : line.day),
      el("td", { class: "num" }, nf.format(line.student_calls), el("span", { class: "dim" }, note)),
      el("td", { class: "num" }, usd(line.student_cost_usd, "the students' calls have no price")),
      el("td", { class: "num" }, usd(line.incumbent_cost_usd, `no price for ${route.incumbent_model}`)),
      el("td", { class: "num" }, usd(line.gross_savings_usd, "unknown: a price is missing")),
      el("td", { class: "num" }, evaluation("judge")),
      el("td", { class: "num" }, evaluation("counterfactual")),
      el("td", { class: "num" }, evaluation("shadow")),
      el("td", { class: `num net ${line.net_savings_usd > 0 ? "good" : line.net_savings_usd < 0 ? "bad" : ""}` },
        usd(line.net_savings_usd, "unknown: a price is missing")));
  }

  function renderSavings(savings) {
    const panel = document.getElementById("savings-panel");
    const body = document.querySelector("#savings tbody");
    body.replaceChildren();
    panel.hidden = !savings.routes.length;
    for (const route of savings.routes) {
      const price = route.incumbent_price
        ? `$${route.incumbent_price.input} in, $${route.incumbent_price.output} out per 1M`
        : "no price known";
      body.append(el("tr", { class: "route-row" }, el("td", { colspan: 10 },
        el("b", { class: "mono" }, route.route), ` · incumbent ${route.incumbent} (${route.incumbent_model}; ${route.incumbent_chosen_by}), ${price}`,
        ` · students: ${route.students.map((name) => {
          const cost = (route.training_cost_usd || {})[name];
          return `${name} (training ${cost === null || cost === undefined ? "unknown" : "$" + cost.toFixed(2)})`;
        }).join(", ")}`)));
      if (!route.days.length) {
        body.append(el("tr", {}, el("td", { class: "dim", colspan: 10 }, "No student calls in this window.")));
        continue;
      }
      for (const line of route.days) body.append(savingsRow(route, line, false));
      body.append(savingsRow(route, route.totals, true));
    }
    document.getElementById("savings-notes").textContent = savings.notes;
  }

  // --- refreshing --------------------------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    const note = document.getElementById("rollouts-error");
    try {
      const [, savings] = await Promise.all([loadRollouts(), api("savings", windowQuery())]);
      renderSavings(savings);
      note.hidden = true;
      debug.renders += 1;
      debug.ready = true;
    } catch (error) {
      if (error.message === "signed out") return;
      note.textContent = `Rollouts and savings: ${error.message}`;
      note.hidden = false;
    }
    const auto = document.getElementById("auto");
    if (!auto || auto.checked) timer = setTimeout(refresh, REFRESH_MS);
  }

  function start() {
    // The page's window buttons change the address first (dashboard.js); follow them.
    for (const b of document.querySelectorAll("#windows button")) b.addEventListener("click", () => setTimeout(refresh, 0));
    document.getElementById("custom").addEventListener("submit", () => setTimeout(refresh, 0));
    const auto = document.getElementById("auto");
    if (auto) auto.addEventListener("change", () => { if (auto.checked) refresh(); else clearTimeout(timer); });
    refresh();
  }

  start();
})();
