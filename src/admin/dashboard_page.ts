/**
 * The dashboard's HTML: a static shell with no data in it. Every service name and number is
 * put in by `/dashboard.js` through `textContent`, so nothing from the config or the wire is
 * ever parsed as HTML.
 *
 * @module
 */

/** The page served at `GET /` on the admin port. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Breakwater dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head>
<body>
<a class="skip" href="#services">Skip to services</a>
<header class="top">
  <div class="brand">
    <h1>Breakwater</h1>
    <p class="subtitle">Breakers are the fleet's, shared through KV. Traffic, pools and upstreams are this instance's.</p>
  </div>
  <div class="top-status">
    <p id="instance" class="instance" data-degraded="unknown">Instance: <span id="instance-word">loading…</span></p>
    <p id="live" class="live" data-live="connecting">Connecting…</p>
    <button type="button" id="forget-token" class="quiet" hidden>Forget admin token</button>
  </div>
</header>
<p id="writes-off" class="notice" hidden>Steering is off on this gateway: set <code>BREAKWATER_ADMIN_TOKEN</code> to enable the force buttons (they answer 403 until then).</p>
<div id="message" class="message" role="status" aria-live="polite"></div>
<div id="error" class="error" role="alert" hidden></div>
<section id="fleet" class="fleet" aria-labelledby="fleet-title">
  <h2 id="fleet-title">Fleet</h2>
  <p id="fleet-summary" class="fleet-summary">Loading the fleet's heartbeats…</p>
  <div class="table-wrap">
    <table id="fleet-table">
      <caption class="sr-only">Gateway instances by heartbeat</caption>
      <thead><tr><th scope="col">Instance</th><th scope="col">Heartbeat</th><th scope="col">Breakers</th><th scope="col">Started</th><th scope="col">Tripped</th></tr></thead>
      <tbody id="fleet-rows"></tbody>
    </table>
  </div>
</section>
<main id="services" class="services" aria-label="Services" tabindex="-1">
  <noscript><p>The dashboard needs JavaScript. <a href="/admin/breakers">GET /admin/breakers</a> has the same state as JSON.</p></noscript>
</main>
<div id="announcer" class="sr-only" aria-live="polite" aria-atomic="false"></div>
<footer class="foot">
  <p>Machine-readable twin: <a href="/admin/breakers">/admin/breakers</a> · live data: <a href="/admin/dashboard.json">/admin/dashboard.json</a> · timeline: <a href="/admin/audit">/admin/audit</a> · fleet: <a href="/admin/fleet">/admin/fleet</a> · <a href="/metrics">/metrics</a></p>
</footer>
<dialog id="token-dialog" aria-labelledby="token-title" aria-describedby="token-help">
  <form id="token-form" method="dialog" novalidate>
    <h2 id="token-title">Admin token</h2>
    <p id="token-help">Forcing a breaker acts on every instance. Enter the gateway's <code>BREAKWATER_ADMIN_TOKEN</code>. It is kept in this tab's session storage only and sent as a bearer header.</p>
    <p id="token-error" class="error" role="alert" hidden></p>
    <label for="token-input">Admin token</label>
    <input id="token-input" name="token" type="password" autocomplete="off" spellcheck="false" required>
    <label for="token-name">Your name, for the fleet's audit timeline (optional)</label>
    <input id="token-name" name="by" type="text" maxlength="64" autocomplete="off" spellcheck="false" placeholder="dashboard">
    <div class="dialog-buttons">
      <button type="submit" id="token-submit">Use token</button>
      <button type="button" id="token-cancel" class="quiet">Cancel</button>
    </div>
  </form>
</dialog>
</body>
</html>
`;
