// The reference service's web UI. No inline script anywhere: the page's Content-Security-Policy
// allows scripts from the service's origin only. Data from the server is inserted with
// textContent, never as HTML, so a stored "<script>" shows as text.
// The session lives in an HttpOnly cookie this script cannot read; unsafe requests carry the
// session's CSRF token (synchronizer pattern) in the X-CSRF-Token header.
"use strict";

let csrfToken = null;

const $ = (id) => document.getElementById(id);

function show(view) {
  $("login-view").hidden = view !== "login";
  $("app-view").hidden = view !== "app";
  $("logout").hidden = view !== "app";
}

function say(text) { $("message").textContent = text || ""; }

async function call(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  return { status: r.status, data };
}

function detail(res) {
  const d = res.data && res.data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => (e.loc || []).join(".") + ": " + e.msg).join("; ");
  return "request failed (" + res.status + ")";
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  row.appendChild(td);
}

async function loadEquipment() {
  const res = await call("GET", "/ui/equipment");
  if (res.status === 401) { show("login"); return; }
  if (res.status !== 200) { say(detail(res)); return; }
  const body = $("equipment").querySelector("tbody");
  body.replaceChildren();
  for (const e of res.data.items) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(e.id);
    cell(tr, e.name); cell(tr, e.serial_number); cell(tr, e.cost); cell(tr, e.notes);
    body.appendChild(tr);
  }
}

async function start() {
  const me = await call("GET", "/ui/me");
  if (me.status === 200) {
    csrfToken = me.data.csrf_token;
    $("who").textContent = me.data.username;
    show("app");
    await loadEquipment();
  } else {
    show("login");
  }
}

async function login(ev) {
  ev.preventDefault();
  say("");
  const body = { username: $("username").value, password: $("password").value };
  if ($("totp").value) body.totp_code = $("totp").value;
  const res = await call("POST", "/ui/login", body);
  $("password").value = "";
  if (res.status !== 200) { say(detail(res)); return; }
  csrfToken = res.data.csrf_token;
  $("who").textContent = res.data.username;
  show("app");
  await loadEquipment();
}

async function create(ev) {
  ev.preventDefault();
  say("");
  const body = { name: $("eq-name").value };
  if ($("eq-serial").value) body.serial_number = $("eq-serial").value;
  if ($("eq-cost").value) body.cost = $("eq-cost").value;
  if ($("eq-notes").value) body.notes = $("eq-notes").value;
  const res = await call("POST", "/ui/equipment", body);
  if (res.status !== 201) { say(detail(res)); return; }
  $("create-form").reset();
  await loadEquipment();
}

async function logout() {
  await call("POST", "/ui/logout");
  csrfToken = null;
  $("who").textContent = "";
  show("login");
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("create-form").addEventListener("submit", create);
  $("logout").addEventListener("click", logout);
  start();
});
