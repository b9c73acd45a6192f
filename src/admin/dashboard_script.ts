/**
 * The dashboard's browser script, served as `/dashboard.js`. Plain ES2020, no dependencies, no
 * build step. It polls `/admin/dashboard.json` once a second and updates the cards in place
 * (so keyboard focus stays where it is), and it steers breakers through
 * `POST /admin/breakers/{service}` with the admin token from an in-page dialog.
 *
 * Rules the script keeps:
 * - untrusted text (service names, prefixes, origins, error titles) only goes into `textContent`
 *   or attribute values, never into `innerHTML`;
 * - the token lives in `sessionStorage` only, goes out only in the `Authorization` header, and is
 *   never logged or put in a URL;
 * - every state is written as a word, the colour only repeats it.
 *
 * (The source avoids backticks so it can live in this template literal unchanged.)
 *
 * @module
 */

/** The script served at `GET /dashboard.js`. */
export const DASHBOARD_SCRIPT = `"use strict";
(function () {
  var POLL_MS = 1000;
  var HIDDEN_POLL_MS = 5000;
  var TOKEN_KEY = "breakwater.adminToken";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var STATE_WORDS = {
    closed: "closed",
    open: "open",
    half_open: "half-open",
    forced_open: "forced open",
    forced_closed: "forced closed"
  };
  var ACTIONS = [
    { action: "open", label: "Force open" },
    { action: "close", label: "Force close" },
    { action: "reset", label: "Reset" }
  ];

  var cards = new Map();
  var lastStates = new Map();
  var snapshot = null;
  var snapshotAt = 0;
  var failedPolls = 0;

  function byId(id) { return document.getElementById(id); }

  /** Creates an element; text goes through textContent only. */
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    for (var key in attrs) node.setAttribute(key, String(attrs[key]));
    return node;
  }

  function stateWord(state) { return STATE_WORDS[state] || String(state); }

  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }

  function formatDuration(ms) {
    var seconds = Math.max(0, Math.ceil(ms / 1000));
    if (seconds < 100) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    return minutes + " min " + (seconds % 60) + " s";
  }

  function formatRate(perSecond) {
    if (perSecond === 0) return "0/s";
    if (perSecond < 10) return perSecond.toFixed(1) + "/s";
    return Math.round(perSecond) + "/s";
  }

  /** Server time now, from the last snapshot plus the time since it arrived (no clock skew). */
  function serverNow() {
    return snapshot ? snapshot.nowMs + (performance.now() - snapshotAt) : Date.now();
  }

  // ---- cards ---------------------------------------------------------------------------

  function fact(list, label) {
    var row = el("div");
    row.append(el("dt", "", label));
    var value = el("dd");
    row.append(value);
    list.append(row);
    return value;
  }

  function chart(container, caption, legend, label) {
    var figure = el("figure");
    var cap = el("figcaption");
    cap.append(el("span", "", caption));
    var value = el("span", "value", "–");
    cap.append(value);
    figure.append(cap);
    var box = svg("svg", { "class": "chart", viewBox: "0 0 120 40", preserveAspectRatio: "none", role: "img" });
    box.setAttribute("aria-label", label);
    var a = svg("path", { "class": "a", fill: "none", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" });
    var b = svg("path", { "class": "b", fill: "none", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" });
    box.append(a, b);
    figure.append(box);
    if (legend) figure.append(el("span", "legend", legend));
    container.append(figure);
    return { value: value, box: box, a: a, b: b, label: label };
  }

  function createCard(service) {
    var card = el("article", "card");
    card.dataset.service = service;
    var headingId = "svc-" + cards.size;
    card.setAttribute("aria-labelledby", headingId);

    var head = el("div", "card-head");
    var title = el("h2", "", service);
    title.id = headingId;
    head.append(title);
    var state = el("span", "state");
    state.append(el("span", "sr-only", "Breaker state: "));
    var stateText = el("span", "state-word", "…");
    state.append(stateText);
    head.append(state);
    card.append(head);
    var prefix = el("div", "prefix");
    var local = el("span", "local", "");
    var sub = el("div");
    sub.append(prefix, local);
    card.append(sub);

    var facts = el("dl", "facts");
    card.append(facts);
    var refs = {
      card: card,
      state: state,
      stateText: stateText,
      prefix: prefix,
      local: local,
      failures: fact(facts, "Failures in window"),
      probe: fact(facts, "Next probe"),
      opened: fact(facts, "Opened"),
      pool: fact(facts, "Pool (this instance)")
    };
    refs.poolText = el("span");
    refs.poolMeter = el("meter");
    refs.poolMeter.min = 0;
    refs.pool.append(refs.poolText, refs.poolMeter);

    var charts = el("div", "charts");
    card.append(charts);
    refs.rate = chart(charts, "Requests", "solid req/s, dashed 5xx", "Requests and errors per second");
    refs.errors = chart(charts, "Error rate", null, "Error rate per second");
    refs.latency = chart(charts, "Latency p50 / p99", "solid p50, dashed p99", "Latency p50 and p99 per second");

    refs.upstreams = el("ul", "upstreams");
    refs.upstreams.setAttribute("aria-label", "Upstreams");
    card.append(refs.upstreams);

    var actions = el("div", "actions");
    actions.setAttribute("role", "group");
    actions.setAttribute("aria-label", "Steer the breaker of " + service + " for the whole fleet");
    refs.buttons = [];
    ACTIONS.forEach(function (spec) {
      var button = el("button", "", spec.label);
      button.type = "button";
      button.dataset.action = spec.action;
      var hidden = el("span", "sr-only", " " + service);
      button.append(hidden);
      button.addEventListener("click", function () { steer(service, spec, button); });
      actions.append(button);
      refs.buttons.push(button);
    });
    card.append(actions);
    return refs;
  }

  /** A path through the points, with gaps where a value is null. */
  function pathOf(values, max, height) {
    var d = "";
    var pen = false;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v === null || v === undefined) { pen = false; continue; }
      var y = height - (Math.min(v, max) / max) * (height - 2) - 1;
      d += (pen ? "L" : "M") + i + " " + y.toFixed(2);
      pen = true;
    }
    return d;
  }

  /** Draws one or two series; the scale is fixedMax, or the data's peak. */
  function drawChart(ref, first, second, valueText, describe, fixedMax) {
    var count = first.length;
    var max = fixedMax || 0;
    if (!fixedMax) {
      first.concat(second || []).forEach(function (v) { if (v !== null && v > max) max = v; });
    }
    if (max <= 0) max = 1;
    ref.box.setAttribute("viewBox", "0 0 " + Math.max(1, count - 1) + " 40");
    ref.a.setAttribute("d", pathOf(first, max, 40));
    ref.b.setAttribute("d", second ? pathOf(second, max, 40) : "");
    setText(ref.value, valueText);
    ref.box.setAttribute("aria-label", ref.label + " over the last " + Math.round(count / 60) +
      " minutes: " + describe);
  }

  function renderCard(refs, data) {
    var view = data.breaker;
    var word = stateWord(view.state);
    refs.card.dataset.state = view.state;
    refs.state.dataset.state = view.state;
    setText(refs.stateText, word);
    setText(refs.prefix, data.prefix);
    setText(refs.local, view.degraded ? " · local breaker (KV unavailable)" : "");

    setText(refs.failures, view.failuresInWindow + " / " + view.failureThreshold);
    var now = serverNow();
    if (view.nextProbeAt === null || view.nextProbeAt === undefined) {
      setText(refs.probe, view.state === "forced_open" ? "none (forced)" : "–");
    } else if (view.nextProbeAt <= now) {
      setText(refs.probe, "due now");
    } else {
      setText(refs.probe, "in " + formatDuration(view.nextProbeAt - now));
    }
    setText(refs.opened, view.openedAt === null || view.openedAt === undefined
      ? "–"
      : formatDuration(now - view.openedAt) + " ago" + (view.openCount > 1 ? " (" + view.openCount + " opens)" : ""));

    var pool = data.pool;
    if (pool) {
      setText(refs.poolText, pool.active + " / " + pool.max + " in flight, " + pool.pending + " waiting");
      refs.poolMeter.max = Math.max(1, pool.max);
      refs.poolMeter.value = pool.active;
      refs.poolMeter.setAttribute("aria-label", "pool usage " + pool.active + " of " + pool.max);
    } else {
      setText(refs.poolText, "–");
    }

    var t = data.traffic;
    var recent = data.recent;
    var maxRate = Math.max.apply(null, t.requests.concat([0]));
    drawChart(refs.rate, t.requests, t.errors, formatRate(recent.requestsPerSecond),
      "now " + formatRate(recent.requestsPerSecond) + ", peak " + maxRate + "/s");
    var ratios = t.requests.map(function (r, i) { return r > 0 ? t.errors[i] / r * 100 : null; });
    var errorText = recent.errorRatio === null ? "–" : (recent.errorRatio * 100).toFixed(recent.errorRatio < 0.1 ? 1 : 0) + "%";
    drawChart(refs.errors, ratios, null, errorText, "now " + errorText + " (scale 0 to 100%)", 100);
    var latencyText = formatMs(recent.p50Ms) + " / " + formatMs(recent.p99Ms);
    drawChart(refs.latency, t.p50Ms, t.p99Ms, latencyText, "now p50 " + formatMs(recent.p50Ms) + ", p99 " + formatMs(recent.p99Ms));

    renderUpstreams(refs.upstreams, data.upstreams);
  }

  function renderUpstreams(list, upstreams) {
    while (list.children.length > upstreams.length) list.lastChild.remove();
    upstreams.forEach(function (upstream, i) {
      var item = list.children[i];
      if (!item) {
        item = el("li");
        item.append(el("span", "health"), el("span", "origin"), el("span", "inflight"));
        list.append(item);
      }
      var health = item.children[0];
      health.dataset.up = String(upstream.available);
      setText(health, upstream.available ? "up" : "down");
      setText(item.children[1], upstream.origin);
      setText(item.children[2], upstream.inFlight + " in flight");
    });
  }

  function announce(text) {
    var announcer = byId("announcer");
    var line = el("p", "", text);
    announcer.append(line);
    while (announcer.children.length > 5) announcer.firstChild.remove();
  }

  function render(data) {
    var container = byId("services");
    var seen = new Set();
    data.services.forEach(function (service, index) {
      seen.add(service.service);
      var refs = cards.get(service.service);
      if (!refs) {
        refs = createCard(service.service);
        cards.set(service.service, refs);
      }
      if (container.children[index] !== refs.card) container.insertBefore(refs.card, container.children[index] || null);
      renderCard(refs, service);
      var before = lastStates.get(service.service);
      if (before !== undefined && before !== service.breaker.state) {
        announce(service.service + " breaker is now " + stateWord(service.breaker.state) +
          " (was " + stateWord(before) + ")");
      }
      lastStates.set(service.service, service.breaker.state);
    });
    cards.forEach(function (refs, name) {
      if (!seen.has(name)) { refs.card.remove(); cards.delete(name); lastStates.delete(name); }
    });

    var instance = byId("instance");
    instance.dataset.degraded = String(data.degraded);
    setText(byId("instance-word"), data.degraded ? "degraded (local breakers, KV unavailable)" : "shared (fleet breakers in KV)");
    byId("writes-off").hidden = data.writesEnabled;
  }

  // ---- polling ---------------------------------------------------------------------------

  function setLive(state, text) {
    var live = byId("live");
    live.dataset.live = state;
    setText(live, text);
  }

  async function poll() {
    try {
      var response = await fetch("/admin/dashboard.json", { cache: "no-store", headers: { accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      var data = await response.json();
      snapshot = data;
      snapshotAt = performance.now();
      failedPolls = 0;
      render(data);
      setLive("ok", "Live · updated " + new Date(data.nowMs).toLocaleTimeString());
    } catch (error) {
      failedPolls++;
      setLive("lost", "Connection lost, retrying (" + failedPolls + ")");
    } finally {
      setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    }
  }

  // ---- steering --------------------------------------------------------------------------

  function showMessage(text) { setText(byId("message"), text); }

  function showError(text) {
    var box = byId("error");
    if (text) { box.hidden = false; setText(box, text); } else { box.hidden = true; setText(box, ""); }
  }

  function readToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  function storeToken(token) {
    try {
      if (token === null) sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) { /* storage disabled: the token lives for this request only */ }
    byId("forget-token").hidden = readToken() === null;
  }

  /** Opens the token dialog; resolves with the token, or null when cancelled. */
  function askToken(problem) {
    var dialog = byId("token-dialog");
    var form = byId("token-form");
    var input = byId("token-input");
    var errorBox = byId("token-error");
    errorBox.hidden = !problem;
    setText(errorBox, problem || "");
    input.value = "";
    return new Promise(function (resolve) {
      function finish(value) {
        form.removeEventListener("submit", onSubmit);
        byId("token-cancel").removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        input.value = "";
        resolve(value);
      }
      function onSubmit(event) {
        // Never let the form submit: the token must not reach a URL or the history.
        event.preventDefault();
        var token = input.value.trim();
        if (token === "") {
          errorBox.hidden = false;
          setText(errorBox, "Enter the token, or press Cancel.");
          input.focus();
          return;
        }
        finish(token);
      }
      function onCancel(event) { event.preventDefault(); finish(null); }
      form.addEventListener("submit", onSubmit);
      byId("token-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
      input.focus();
    });
  }

  async function problemTitle(response) {
    try {
      var body = await response.json();
      return body.title ? body.title + (body.detail ? ": " + body.detail : "") : "";
    } catch (_) { return ""; }
  }

  async function steer(service, spec, button) {
    showError("");
    var token = readToken();
    var problem = null;
    for (;;) {
      if (token === null) {
        token = await askToken(problem);
        if (token === null) { showMessage("Cancelled: " + spec.label.toLowerCase() + " " + service + "."); button.focus(); return; }
        storeToken(token);
      }
      var response;
      setBusy(true);
      try {
        response = await fetch("/admin/breakers/" + encodeURIComponent(service), {
          method: "POST",
          cache: "no-store",
          headers: { "authorization": "Bearer " + token, "content-type": "application/json" },
          body: JSON.stringify({ action: spec.action })
        });
      } catch (error) {
        setBusy(false);
        showError("Could not reach the gateway to " + spec.label.toLowerCase() + " " + service + ".");
        button.focus();
        return;
      }
      setBusy(false);
      if (response.status === 401) {
        storeToken(null);
        token = null;
        problem = "401 Unauthorized: the gateway refused that token. Enter the right one.";
        showError("401 Unauthorized: the admin token was refused (" + service + " not changed).");
        continue;
      }
      if (response.status === 403) {
        showError("403 Forbidden: steering is off on this gateway (set BREAKWATER_ADMIN_TOKEN). " + service + " not changed.");
        button.focus();
        return;
      }
      if (!response.ok) {
        var title = await problemTitle(response);
        showError(response.status + " " + (title || response.statusText) + " (" + service + " not changed).");
        button.focus();
        return;
      }
      var view = await response.json();
      showError("");
      showMessage(service + " is now " + stateWord(view.state) + " for the whole fleet (" +
        spec.label.toLowerCase() + ").");
      if (snapshot) {
        snapshot.services.forEach(function (entry) { if (entry.service === service) entry.breaker = view; });
        render(snapshot);
      }
      button.focus();
      return;
    }
  }

  function setBusy(busy) {
    cards.forEach(function (refs) {
      refs.buttons.forEach(function (button) { button.disabled = busy; });
    });
  }

  function start() {
    byId("forget-token").addEventListener("click", function () {
      storeToken(null);
      showMessage("Admin token forgotten for this tab.");
    });
    storeToken(readToken());
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
`;
