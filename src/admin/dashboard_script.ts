/**
 * The dashboard's browser script, served as `/dashboard.js`. Plain ES2020, no dependencies, no
 * build step. It polls `/admin/dashboard.json` once a second and updates the cards in place
 * (so keyboard focus stays where it is), reads the fleet's timeline (`/admin/audit`) and
 * instances (`/admin/fleet`) every few seconds, and it steers breakers through
 * `POST /admin/breakers/{service}` with the admin token (and the caller's name for the audit
 * timeline) from an in-page dialog.
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
  var NAME_KEY = "breakwater.adminName";
  var INCIDENT_POLL_MS = 3000;
  var TIMELINE_ROWS = 6;
  var KIND_WORDS = {
    trip: "tripped",
    probe: "probe sent",
    reopen: "probe failed, reopened",
    close: "probe passed, closed",
    force_open: "forced open",
    force_close: "forced closed",
    reset: "reset"
  };
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
  var incidents = { audit: null, fleet: null };
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

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  /** Wall-clock time of day in the browser's zone, 24-hour HH:MM:SS. */
  function formatClock(ms) {
    var d = new Date(ms);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
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

  // Chart geometry in SVG user units: the plot sits right of the y-axis labels, above the
  // x-axis labels. The SVG scales as a whole (text included), so labels stay legible.
  var CHART = { width: 300, height: 100, left: 34, right: 10, top: 16, bottom: 20 };

  function chart(container, caption, unit, legend, label) {
    var figure = el("figure");
    var cap = el("figcaption");
    cap.append(el("span", "", caption + " (" + unit + ")"));
    var value = el("span", "value", "–");
    cap.append(value);
    figure.append(cap);
    var box = svg("svg", {
      "class": "chart",
      viewBox: "0 0 " + CHART.width + " " + CHART.height,
      role: "img"
    });
    box.setAttribute("aria-label", label);
    var grid = svg("g", { "class": "grid" });
    var axes = svg("g", { "class": "axes" });
    var a = svg("path", { "class": "a", fill: "none", "stroke-width": 1.5 });
    var b = svg("path", { "class": "b", fill: "none", "stroke-width": 1.5 });
    box.append(grid, a, b, axes);
    figure.append(box);
    if (legend) figure.append(el("span", "legend", legend));
    container.append(figure);
    return { value: value, box: box, grid: grid, axes: axes, a: a, b: b, label: label, unit: unit };
  }

  /** A round scale top at or above max: 1, 2 or 5 times a power of ten. */
  function niceMax(max) {
    if (!(max > 0)) return 1;
    var power = Math.pow(10, Math.floor(Math.log10(max)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= max) return steps[i] * power;
    return 10 * power;
  }

  function tickText(value, unit) {
    var text = value >= 100 || value === Math.round(value) ? String(Math.round(value)) : value.toPrecision(2);
    return unit === "%" ? text + "%" : text;
  }

  function axisText(x, y, anchor, text) {
    var node = svg("text", { x: x, y: y, "text-anchor": anchor });
    node.textContent = text;
    return node;
  }

  /** Redraws the y grid and labels (0, half, top, with the unit) and the x labels (seconds ago). */
  function drawAxes(ref, top, count) {
    var plotW = CHART.width - CHART.left - CHART.right;
    var plotH = CHART.height - CHART.top - CHART.bottom;
    var key = top + "|" + count;
    if (ref.axesKey === key) return;
    ref.axesKey = key;
    while (ref.grid.firstChild) ref.grid.firstChild.remove();
    while (ref.axes.firstChild) ref.axes.firstChild.remove();
    [0, 0.5, 1].forEach(function (fraction) {
      var y = CHART.top + plotH - fraction * plotH;
      ref.grid.append(svg("line", { x1: CHART.left, x2: CHART.left + plotW, y1: y, y2: y }));
      ref.axes.append(axisText(CHART.left - 4, y + 3.5, "end", tickText(top * fraction, ref.unit)));
    });
    ref.axes.append(svg("line", {
      "class": "axis", x1: CHART.left, x2: CHART.left, y1: CHART.top, y2: CHART.top + plotH
    }));
    ref.axes.append(svg("line", {
      "class": "axis", x1: CHART.left, x2: CHART.left + plotW, y1: CHART.top + plotH, y2: CHART.top + plotH
    }));
    var seconds = Math.max(1, count);
    var baseline = CHART.height - 8;
    ref.axes.append(axisText(CHART.left, baseline, "start", "-" + seconds + " s"));
    ref.axes.append(axisText(CHART.left + plotW / 2, baseline, "middle", "-" + Math.round(seconds / 2) + " s"));
    ref.axes.append(axisText(CHART.left + plotW, baseline, "end", "now"));
    // The unit above the y axis, so every tick reads as a value in it.
    ref.axes.append(axisText(CHART.left - 4, 10, "start", ref.unit));
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
      breakerWhy: null,
      probe: fact(facts, "Next probe"),
      opened: fact(facts, "Opened"),
      pool: fact(facts, "Pool (this instance)")
    };
    refs.poolText = el("span");
    refs.poolMeter = el("meter");
    refs.poolMeter.min = 0;
    refs.pool.append(refs.poolText, refs.poolMeter);

    refs.failuresLabel = refs.failures.previousElementSibling;
    refs.why = el("p", "why");
    card.insertBefore(refs.why, facts.nextSibling);

    var charts = el("div", "charts");
    card.append(charts);
    refs.rate = chart(charts, "Requests", "req/s", "solid: requests, dashed: 5xx", "Requests and 5xx answers per second");
    refs.errors = chart(charts, "Error rate", "%", "5xx share per second", "Error rate per second");
    refs.latency = chart(charts, "Latency", "ms", "solid: p50, dashed: p99", "Latency p50 and p99 per second");

    card.append(el("h3", "minor", "Upstreams (this instance)"));
    refs.upstreams = el("ul", "upstreams");
    refs.upstreams.setAttribute("aria-label", "Upstreams of " + service);
    card.append(refs.upstreams);

    var timeline = el("section", "timeline");
    var timelineTitle = el("h3", "minor", "Timeline (fleet, from KV)");
    timeline.append(timelineTitle);
    refs.timeline = el("ol", "events");
    refs.timeline.setAttribute("aria-label", "Breaker timeline of " + service + ", newest first");
    timeline.append(refs.timeline);
    card.append(timeline);

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

  /** A path through the points in plot coordinates, with gaps where a value is null. */
  function pathOf(values, top) {
    var plotW = CHART.width - CHART.left - CHART.right;
    var plotH = CHART.height - CHART.top - CHART.bottom;
    var step = plotW / Math.max(1, values.length - 1);
    var d = "";
    var pen = false;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v === null || v === undefined) { pen = false; continue; }
      var x = CHART.left + i * step;
      var y = CHART.top + plotH - (Math.min(v, top) / top) * plotH;
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      pen = true;
    }
    return d;
  }

  /** Draws one or two series on a round scale: fixedMax, or the data's peak rounded up. */
  function drawChart(ref, first, second, valueText, describe, fixedMax) {
    var count = first.length;
    var max = 0;
    first.concat(second || []).forEach(function (v) { if (v !== null && v > max) max = v; });
    var top = fixedMax || niceMax(max);
    drawAxes(ref, top, count);
    ref.a.setAttribute("d", pathOf(first, top));
    ref.b.setAttribute("d", second ? pathOf(second, top) : "");
    setText(ref.value, valueText);
    ref.box.setAttribute("aria-label", ref.label + " over the last " + count +
      " seconds, scale 0 to " + tickText(top, ref.unit) + (ref.unit === "%" ? "" : " " + ref.unit) +
      ": " + describe);
  }

  function renderCard(refs, data) {
    var view = data.breaker;
    var word = stateWord(view.state);
    refs.card.dataset.state = view.state;
    refs.state.dataset.state = view.state;
    setText(refs.stateText, word);
    setText(refs.prefix, data.prefix);
    setText(refs.local, view.degraded ? " · local breaker (KV unavailable)" : "");

    var now = serverNow();
    renderBreakerWhy(refs, data.service, view);
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
    renderTimeline(refs.timeline, data.service);
  }

  // ---- what a state means ------------------------------------------------------------------

  /** The fleet's timeline of one service, newest first (empty until the first audit read). */
  function entriesOf(service) {
    var audit = incidents.audit;
    if (!audit) return [];
    return audit.entries.filter(function (entry) { return entry.service === service; });
  }

  /**
   * The entry that explains the current state: for an open breaker the trip of this outage
   * (reopens after failed probes keep it), for a forced one the force, else null.
   */
  function causeOf(service, state) {
    var entries = entriesOf(service);
    for (var i = 0; i < entries.length; i++) {
      var kind = entries[i].kind;
      if (state === "open" || state === "half_open") {
        if (kind === "trip") return entries[i];
        if (kind === "close" || kind === "reset" || kind === "force_open" || kind === "force_close") return null;
      } else if (state === "forced_open" || state === "forced_closed") {
        if (kind === "force_open" || kind === "force_close") return entries[i];
      } else {
        return null;
      }
    }
    return null;
  }

  function instanceLabel(id) {
    var fleet = incidents.fleet;
    return fleet && fleet.instanceId === id ? id + " (this instance)" : id;
  }

  function renderBreakerWhy(refs, service, view) {
    var open = view.state === "open" || view.state === "half_open";
    var cause = causeOf(service, view.state);
    refs.card.dataset.trippedBy = cause && cause.kind === "trip" ? cause.instanceId : "";
    if (open) {
      // The window restarts at zero once the breaker opens: show what tripped it instead.
      setText(refs.failuresLabel, "Tripped after");
      if (cause) {
        var failures = typeof cause.failures === "number" ? cause.failures : null;
        setText(refs.failures, (failures === null ? "the failure threshold" : failures + " failures") +
          " (threshold " + view.failureThreshold + ")");
        setText(refs.why, "Tripped after " + (failures === null ? view.failureThreshold : failures) +
          " failures at " + formatClock(cause.atMs) + " by instance " + instanceLabel(cause.instanceId) +
          (view.openCount > 1 ? "; " + (view.openCount - 1) + " failed probe" + (view.openCount > 2 ? "s" : "") + " since" : "") + ".");
      } else {
        setText(refs.failures, "threshold " + view.failureThreshold + " reached");
        setText(refs.why, view.degraded
          ? "Opened by this instance's local breaker (KV unavailable): " + view.failureThreshold + " failures here within the window."
          : "Opened " + (view.openedAt ? "at " + formatClock(view.openedAt) : "") + "; the trip is not in the timeline (yet).");
      }
      return;
    }
    setText(refs.failuresLabel, "Failures in window");
    setText(refs.failures, view.failuresInWindow + " / " + view.failureThreshold);
    if (cause) {
      setText(refs.why, stateWord(view.state).replace(/^./, function (c) { return c.toUpperCase(); }) +
        " by " + (cause.by || "admin") + " at " + formatClock(cause.atMs) + " through instance " +
        instanceLabel(cause.instanceId) + (cause.fleet === false ? " (this instance only: KV was unavailable)" : "") + ".");
    } else {
      setText(refs.why, "");
    }
  }

  function failureText(failure) {
    if (!failure) return "";
    return (failure.status !== null ? String(failure.status) : (failure.error || "failure")) +
      " at " + formatClock(failure.atMs);
  }

  /** One upstream's state in words: in or out of rotation, what decides it, its last failure. */
  function upstreamWords(upstream) {
    var word;
    var detail;
    if (upstream.rotation === "ejected") {
      word = "ejected";
      detail = "by outlier detection until " + formatClock(upstream.ejectedUntilMs) +
        (upstream.ejections > 1 ? " (ejection " + upstream.ejections + ")" : "");
    } else if (upstream.rotation === "failing_health_check") {
      word = "out";
      detail = "failing health check GET " + upstream.healthCheckPath;
    } else {
      word = "in rotation";
      detail = upstream.healthCheckPath !== null
        ? "passing health check GET " + upstream.healthCheckPath
        : upstream.outlierDetection
        ? "no health check; outlier detection on, not ejected"
        : "no health check: not ejected";
    }
    if (upstream.lastFailure) {
      detail += ", last " + failureText(upstream.lastFailure) +
        (upstream.failuresInARow > 0 ? " (" + upstream.failuresInARow + " in a row)" : " (answered fine since)");
    } else {
      detail += ", no failure seen";
    }
    var failing = upstream.rotation === "in" && upstream.failuresInARow > 0;
    return { word: failing ? "failing" : word, detail: detail, state: failing ? "failing" : upstream.rotation };
  }

  function renderUpstreams(list, upstreams) {
    while (list.children.length > upstreams.length) list.lastChild.remove();
    upstreams.forEach(function (upstream, i) {
      var item = list.children[i];
      if (!item) {
        item = el("li");
        item.append(el("span", "health"), el("span", "origin"), el("span", "inflight"), el("span", "detail"));
        list.append(item);
      }
      var words = upstreamWords(upstream);
      var health = item.children[0];
      health.dataset.up = String(upstream.available);
      health.dataset.rotation = words.state;
      setText(health, words.word);
      setText(item.children[1], upstream.origin);
      setText(item.children[2], upstream.inFlight + " in flight");
      setText(item.children[3], words.detail);
    });
  }

  function eventText(entry) {
    var text = (KIND_WORDS[entry.kind] || entry.kind) + " (" + stateWord(entry.from) + " → " + stateWord(entry.to) + ")";
    if (entry.kind === "trip" && typeof entry.failures === "number") text += " after " + entry.failures + " failures";
    if (entry.by) text += " by " + entry.by;
    text += ", instance " + instanceLabel(entry.instanceId);
    if (entry.fleet === false) text += " (this instance only)";
    return text;
  }

  function renderTimeline(list, service) {
    var entries = entriesOf(service).slice(0, TIMELINE_ROWS);
    if (entries.length === 0) {
      if (list.children.length !== 1 || !list.firstChild.classList.contains("empty")) {
        while (list.firstChild) list.firstChild.remove();
        list.append(el("li", "empty"));
      }
      setText(list.firstChild, incidents.audit
        ? "No transitions or forced changes in the fleet's recent timeline."
        : "Loading…");
      return;
    }
    while (list.children.length > entries.length) list.lastChild.remove();
    if (list.firstChild && list.firstChild.classList.contains("empty")) list.firstChild.remove();
    entries.forEach(function (entry, i) {
      var item = list.children[i];
      if (!item) {
        item = el("li");
        item.append(el("time"), el("span", "event"));
        list.append(item);
      }
      item.dataset.kind = entry.kind;
      var time = item.children[0];
      time.setAttribute("datetime", new Date(entry.atMs).toISOString());
      setText(time, formatClock(entry.atMs));
      setText(item.children[1], eventText(entry));
    });
  }

  // ---- the fleet -------------------------------------------------------------------------------

  function trippedBy(instanceId) {
    var names = [];
    cards.forEach(function (refs, name) { if (refs.card.dataset.trippedBy === instanceId) names.push(name); });
    return names;
  }

  function memberBreakers(member) {
    if (member.self) {
      return member.degraded
        ? "degraded since " + formatClock(member.degradedSinceMs) + ": local breakers, KV unavailable"
        : "shared (fleet breakers in KV)";
    }
    if (member.status === "alive") {
      return "shared" + (member.lastDegraded
        ? "; degraded " + formatClock(member.lastDegraded.fromMs) + "–" + formatClock(member.lastDegraded.toMs)
        : "");
    }
    if (member.status === "stopped") return "–";
    return "unknown: silent (degraded, cut off from KV, or gone)";
  }

  function memberHeartbeat(member) {
    if (member.self) return "this instance";
    if (member.status === "stopped") return "stopped at " + formatClock(member.stoppedAtMs);
    var age = formatDuration(member.heartbeatAgeMs) + " ago";
    return member.status === "alive" ? "alive, " + age : "silent, last " + age;
  }

  function renderFleet() {
    var fleet = incidents.fleet;
    if (!fleet) return;
    var rows = byId("fleet-rows");
    var members = fleet.members;
    while (rows.children.length > members.length) rows.lastChild.remove();
    members.forEach(function (member, i) {
      var row = rows.children[i];
      if (!row) {
        row = el("tr");
        row.append(el("th"), el("td"), el("td"), el("td"), el("td"));
        row.children[0].setAttribute("scope", "row");
        rows.append(row);
      }
      row.dataset.instance = member.instanceId;
      row.dataset.status = member.status;
      row.dataset.degraded = String(member.degraded);
      setText(row.children[0], instanceLabel(member.instanceId));
      setText(row.children[1], memberHeartbeat(member));
      setText(row.children[2], memberBreakers(member));
      setText(row.children[3], formatClock(member.startedAtMs));
      var tripped = trippedBy(member.instanceId);
      setText(row.children[4], tripped.length ? tripped.join(", ") : "–");
    });
    var alive = members.filter(function (m) { return m.status === "alive"; }).length;
    var silent = members.filter(function (m) { return m.status === "silent"; }).length;
    setText(byId("fleet-summary"), fleet.known
      ? alive + " alive" + (silent ? ", " + silent + " silent" : "") + " (heartbeat every " +
        Math.round(fleet.intervalMs / 1000) + " s; silent after " + Math.round(3 * fleet.intervalMs / 1000) + " s without one)."
      : "Fleet unknown: this instance cannot read KV (degraded); only itself is shown.");
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
    var stateChanged = false;
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
        // A transition has an entry in the fleet's timeline: read it now, not in a few seconds.
        stateChanged = true;
        announce(service.service + " breaker is now " + stateWord(service.breaker.state) +
          " (was " + stateWord(before) + ")");
      }
      lastStates.set(service.service, service.breaker.state);
    });
    cards.forEach(function (refs, name) {
      if (!seen.has(name)) { refs.card.remove(); cards.delete(name); lastStates.delete(name); }
    });
    if (stateChanged) setTimeout(pollIncidents, 0);

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
      setLive("ok", "Live · updated " + formatClock(data.nowMs));
    } catch (error) {
      failedPolls++;
      setLive("lost", "Connection lost, retrying (" + failedPolls + ")");
    } finally {
      setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    }
  }

  async function readJson(path) {
    var response = await fetch(path, { cache: "no-store", headers: { accept: "application/json" } });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return await response.json();
  }

  var incidentTimer = 0;

  /** Reads the fleet's timeline and instances (KV reads: slower than the live poll). */
  async function pollIncidents() {
    clearTimeout(incidentTimer);
    try {
      var results = await Promise.all([readJson("/admin/audit?limit=200"), readJson("/admin/fleet")]);
      incidents.audit = results[0];
      incidents.fleet = results[1];
      if (snapshot) render(snapshot);
      renderFleet();
    } catch (_) {
      // The live poll reports a lost connection; the last timeline stays on screen.
    } finally {
      incidentTimer = setTimeout(pollIncidents, document.hidden ? HIDDEN_POLL_MS * 2 : INCIDENT_POLL_MS);
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

  function readName() {
    try { return sessionStorage.getItem(NAME_KEY) || ""; } catch (_) { return ""; }
  }

  function storeName(name) {
    try {
      if (name) sessionStorage.setItem(NAME_KEY, name); else sessionStorage.removeItem(NAME_KEY);
    } catch (_) { /* storage disabled */ }
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
    byId("token-name").value = readName();
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
        storeName(byId("token-name").value.replace(/[\\u0000-\\u001f\\u007f]/g, "").trim().slice(0, 64));
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
          body: JSON.stringify({ action: spec.action, by: readName() || "dashboard" })
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
      pollIncidents();
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
    pollIncidents();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
`;
