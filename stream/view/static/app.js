// stampflow view: one page of rows at a time, filtered and sorted by the server (/api/rows).
// Every value from a packet or a result is written with textContent, never parsed as HTML: packet content is text.
"use strict";

const state = { meta: null, page: 1, total: 0, perPage: 50 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function getJSON(url) {
  const res = await fetch(url);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function fmt(x, digits) {
  if (x === null || x === undefined) return "–";
  if (typeof x === "number") return Number.isInteger(x) ? String(x) : x.toFixed(digits || 3);
  return String(x);
}

// -- filters ------------------------------------------------------------------------------------------------------
function fillSelect(select, values, labelOf) {
  const keep = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const v of values) select.add(new Option(labelOf ? labelOf(v) : v, v));
  select.value = values.includes(keep) ? keep : "";
}

function refreshLabels() {
  const models = state.meta.models;
  const chosen = $("f-model").value;
  const labels = new Set();
  for (const [name, info] of Object.entries(models)) {
    if (!chosen || chosen === name) Object.keys(info.labels).forEach((l) => labels.add(l));
  }
  fillSelect($("f-label"), [...labels].sort());
}

function query() {
  const form = new FormData($("filters"));
  const params = new URLSearchParams();
  for (const [k, v] of form.entries()) if (v !== "") params.set(k, v);
  params.set("page", String(state.page));
  return params;
}

// -- rows ---------------------------------------------------------------------------------------------------------
function stampCell(row) {
  const td = el("td", { class: "stamps" });
  if (!row.stamps.length) td.append(el("span", { class: "muted", text: "no packet" }));
  for (const name of row.stamps) {
    const img = el("img", { class: "thumb", alt: `${name} stamp`, loading: "lazy", decoding: "async",
                            src: `/stamp/${row.id}/${encodeURIComponent(name)}.png` });
    td.append(el("div", { class: "stamp-box" }, img, el("div", { class: "stamp-name", text: name })));
  }
  return td;
}

function predictionLine(p) {
  const div = el("div", { class: "pred" });
  div.append(el("span", { class: "model", text: p.model }), el("span", { class: "muted", text: ` ${p.model_version} ` }));
  if (p.mock) div.append(el("span", { class: "badge mock", text: "mock-trained" }));
  div.append(" ", el("b", { text: p.label }));
  if (p.probability !== null && p.probability !== undefined) {
    div.append(el("span", { class: "num", text: ` p=${fmt(p.probability)}` }));
  }
  div.append(el("span", { class: "num muted", text: ` ± ${fmt(p.uncertainty, 4)}` }));
  if (p.out_of_distribution) div.append(el("span", { class: "badge ood", text: "out of distribution" }));
  if (p.correct === true) div.append(el("span", { class: "ok", text: " ✓" }));
  if (p.correct === false) div.append(el("span", { class: "wrong", text: " ✗ disagrees" }));
  return div;
}

function truthText(row) {
  if (row.truth) return row.truth;
  const vals = Object.entries(row.truth_values || {});
  return vals.length ? vals.map(([k, v]) => `${k}=${fmt(v)}`).join(", ") : "–";
}

function renderRows(data) {
  const body = $("rows");
  body.replaceChildren();
  for (const row of data.rows) {
    const tr = el("tr", { class: "result-row", "data-id": String(row.id) });
    tr.append(el("td", {}, el("div", { class: "model", text: row.objectId }),
                         el("div", { class: "muted num", text: `${row.survey || ""} ${row.candid}` }),
                         el("div", { class: "muted", text: row.time ? `${row.time_kind} ${row.time}` : "" })));
    tr.append(stampCell(row));
    const preds = el("td", {});
    if (!row.predictions.length) preds.append(el("span", { class: "muted", text: "no model accepted it" }));
    row.predictions.forEach((p) => preds.append(predictionLine(p)));
    tr.append(preds, el("td", { text: truthText(row) }));
    const flags = el("td", {});
    row.flags.forEach((f) => flags.append(el("span", { class: "badge flag", text: f })));
    tr.append(flags);
    tr.addEventListener("click", () => openDetail(row.id));
    body.append(tr);
  }
  state.total = data.total;
  const pages = Math.max(1, Math.ceil(data.total / data.per_page));
  $("page-info").textContent = `page ${data.page} of ${pages} · ${data.total} results`;
  $("prev").disabled = data.page <= 1;
  $("next").disabled = data.page >= pages;
}

let pending = 0;
async function loadRows() {
  const ticket = ++pending;
  $("status").textContent = "loading…";
  try {
    const data = await getJSON(`/api/rows?${query()}`);
    if (ticket !== pending) return; // a newer request was made meanwhile
    renderRows(data);
    $("status").textContent = "";
    if (window.__firstRowsPaint === undefined) {
      // two frames: the rows have been laid out and painted, not just inserted
      requestAnimationFrame(() => requestAnimationFrame(() => { window.__firstRowsPaint = performance.now(); }));
    }
  } catch (err) {
    $("status").textContent = `error: ${err.message}`;
  }
}

// -- detail -------------------------------------------------------------------------------------------------------
async function openDetail(id) {
  const d = await getJSON(`/api/result/${id}`);
  const row = d.row;
  $("detail-title").textContent = `${row.objectId} · ${row.survey || ""} · candid ${row.candid}`;
  const stamps = $("detail-stamps");
  stamps.replaceChildren();
  const infos = (d.packet && d.packet.stamps) || [];
  for (const s of infos) {
    const cap = s.error ? `${s.name}: ${s.error}` :
      `${s.name} · ${s.shape[1]}×${s.shape[0]} px${s.padded ? " · padded" : ""}${s.nan_fraction ? ` · NaN ${fmt(s.nan_fraction)}` : ""}`;
    const img = s.error ? null : el("img", { class: "full", alt: `${s.name} stamp, full size`,
                                              src: `/stamp/${row.id}/${encodeURIComponent(s.name)}.png?size=full` });
    stamps.append(el("figure", {}, img, el("figcaption", { text: cap })));
  }
  if (d.packet_error) stamps.append(el("p", { class: "muted", text: d.packet_error }));
  const models = $("detail-models");
  models.replaceChildren();
  row.predictions.forEach((p) => {
    models.append(predictionLine(p));
    const probs = Object.entries(p.probabilities || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ");
    const vals = Object.entries(p.values || {}).map(([k, v]) => `${k}=${fmt(v, 4)}`).join(" · ");
    if (probs || vals) models.append(el("div", { class: "muted num", text: probs || vals }));
  });
  models.append(el("div", { text: `truth: ${truthText(row)}` }));
  const fields = $("detail-fields");
  fields.replaceChildren();
  const pairs = d.packet ? d.packet.fields.concat([["origin", d.packet.origin]]) : [];
  for (const [k, v] of pairs) {
    fields.append(el("tr", {}, el("td", { text: k }), el("td", { class: "num", text: fmt(v, 4) })));
  }
  $("detail-json").textContent = JSON.stringify(d.result, null, 2);
  $("detail").hidden = false;
  history.replaceState(null, "", `#result=${id}`);
}

function closeDetail() {
  $("detail").hidden = true;
  history.replaceState(null, "", location.pathname + location.search);
}

// -- dead letters -------------------------------------------------------------------------------------------------
async function loadDead() {
  const data = await getJSON("/api/dead");
  const body = $("dead-rows");
  body.replaceChildren();
  for (const d of data.dead_letters) {
    const when = d.time ? new Date(d.time * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
    const link = el("a", { href: `/dead/${d.id}/bytes`, download: `dead-letter-${d.id}.bin`,
                           text: "original bytes" });
    body.append(el("tr", { class: "dead-row" }, el("td", { text: when }), el("td", { text: d.stage }),
      el("td", {}, el("b", { text: d.error_type || "" }), el("div", { text: d.error })),
      el("td", { text: d.origin }), el("td", { class: "num", text: String(d.bytes) }), el("td", {}, link)));
  }
  $("dead-status").textContent = data.dead_letters.length ? "" : "no dead letters were given to the viewer";
}

function showTab(name) {
  $("results-view").hidden = name !== "results";
  $("dead-view").hidden = name !== "dead";
  $("tab-results").classList.toggle("active", name === "results");
  $("tab-dead").classList.toggle("active", name === "dead");
  if (name === "dead") loadDead().catch((err) => { $("dead-status").textContent = `error: ${err.message}`; });
}

// -- start --------------------------------------------------------------------------------------------------------
async function start() {
  loadRows(); // first rows do not wait for the facets
  const meta = await getJSON("/api/meta");
  state.meta = meta;
  $("described").textContent = meta.described +
    (meta.unmatched ? ` · ${meta.unmatched} results without their packet (no stamps)` : "");
  $("tab-dead").textContent = `Dead letters (${meta.dead_letters})`;
  const names = Object.keys(meta.models);
  fillSelect($("f-model"), names, (n) => meta.models[n].mock ? `${n} (mock-trained)` : n);
  fillSelect($("f-flag"), Object.keys(meta.flags), (f) => `${f} (${meta.flags[f]})`);
  refreshLabels();
  const m = /^#result=(\d+)$/.exec(location.hash);
  if (m) openDetail(Number(m[1]));
}

document.addEventListener("DOMContentLoaded", () => {
  $("filters").addEventListener("change", (ev) => {
    if (ev.target.id === "f-model") refreshLabels();
    state.page = 1;
    loadRows();
  });
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("prev").addEventListener("click", () => { state.page -= 1; loadRows(); });
  $("next").addEventListener("click", () => { state.page += 1; loadRows(); });
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("click", (ev) => { if (ev.target.id === "detail") closeDetail(); });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeDetail(); });
  $("tab-results").addEventListener("click", () => showTab("results"));
  $("tab-dead").addEventListener("click", () => showTab("dead"));
  start().catch((err) => { $("status").textContent = `error: ${err.message}`; });
});
