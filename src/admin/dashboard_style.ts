/**
 * The dashboard's stylesheet, served as `/dashboard.css` (a file rather than inline, so the
 * page's CSP needs no `'unsafe-inline'`). Every state has a word as well as a colour, and the
 * colours pass WCAG AA contrast for white text on them.
 *
 * @module
 */

/** The stylesheet served at `GET /dashboard.css`. */
export const DASHBOARD_STYLE = `:root {
  --bg: #f6f8fa; --card: #ffffff; --text: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --focus: #0550ae;
  --closed: #1a7f37; --open: #cf222e; --half-open: #9a6700;
  --forced-open: #8250df; --forced-closed: #0969da;
  --chart-a: #0969da; --chart-b: #cf222e;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--text); background: var(--bg);
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --card: #161b22; --text: #e6edf3; --muted: #9198a1; --line: #3d444d;
    --focus: #79c0ff; --chart-a: #58a6ff; --chart-b: #ff7b72;
  }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem; line-height: 1.4; }
h1 { font-size: 1.4rem; margin: 0; }
h2 { font-size: 1.1rem; margin: 0; overflow-wrap: anywhere; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
a { color: var(--focus); }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}
.skip { position: absolute; left: -10000px; }
.skip:focus { left: 1rem; top: 0.5rem; background: var(--card); padding: 0.25rem 0.5rem; z-index: 2; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.top {
  display: flex; flex-wrap: wrap; gap: 0.5rem 1.5rem; align-items: flex-start;
  justify-content: space-between; margin-bottom: 0.75rem;
}
.subtitle { margin: 0.2rem 0 0; color: var(--muted); font-size: 0.9rem; }
.top-status { display: flex; flex-wrap: wrap; gap: 0.5rem 1rem; align-items: center; }
.top-status p { margin: 0; }
.instance[data-degraded="true"] { color: var(--open); font-weight: 600; }
.live::before { content: "● "; color: var(--closed); }
.live[data-live="lost"]::before { content: "✕ "; color: var(--open); }
.live[data-live="connecting"]::before { content: "… "; color: var(--muted); }
.notice, .message:not(:empty), .error {
  border-radius: 6px; padding: 0.5rem 0.75rem; margin: 0 0 0.75rem; border: 1px solid var(--line);
  background: var(--card);
}
.error { border-color: var(--open); color: var(--open); font-weight: 600; }
.error::before { content: "Error: "; }
.services {
  display: grid; gap: 1rem;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 22rem), 1fr));
}
.services:focus { outline: none; }
.card {
  background: var(--card); border: 1px solid var(--line); border-left: 6px solid var(--muted);
  border-radius: 8px; padding: 0.75rem 1rem; min-width: 0;
}
.card[data-state="closed"] { border-left-color: var(--closed); }
.card[data-state="open"] { border-left-color: var(--open); }
.card[data-state="half_open"] { border-left-color: var(--half-open); }
.card[data-state="forced_open"] { border-left-color: var(--forced-open); border-left-style: double; }
.card[data-state="forced_closed"] { border-left-color: var(--forced-closed); border-left-style: double; }
.card-head { display: flex; flex-wrap: wrap; gap: 0.25rem 0.75rem; align-items: baseline; justify-content: space-between; }
.prefix { color: var(--muted); font-family: ui-monospace, monospace; font-size: 0.85rem; overflow-wrap: anywhere; }
.state {
  display: inline-block; padding: 0.15rem 0.6rem; border-radius: 999px; color: #fff;
  font-weight: 700; text-transform: uppercase; letter-spacing: 0.03em; font-size: 0.85rem;
  background: var(--muted); white-space: nowrap;
}
.state[data-state="closed"] { background: var(--closed); }
.state[data-state="open"] { background: var(--open); }
.state[data-state="half_open"] { background: var(--half-open); }
.state[data-state="forced_open"] { background: var(--forced-open); }
.state[data-state="forced_closed"] { background: var(--forced-closed); }
.local { color: var(--open); font-size: 0.85rem; font-weight: 600; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: 0.5rem 1rem; margin: 0.75rem 0; }
.facts div { min-width: 0; }
.facts dt { color: var(--muted); font-size: 0.8rem; }
.facts dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
meter { width: 100%; height: 0.6rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 15rem), 1fr)); gap: 0.75rem 1rem; }
figure { margin: 0; min-width: 0; }
figcaption { font-size: 0.8rem; color: var(--muted); display: flex; justify-content: space-between; gap: 0.5rem; flex-wrap: wrap; }
figcaption .value { color: var(--text); font-variant-numeric: tabular-nums; }
svg.chart { display: block; width: 100%; height: auto; overflow: visible; }
svg.chart .a { stroke: var(--chart-a); }
svg.chart .b { stroke: var(--chart-b); stroke-dasharray: 4 3; }
svg.chart .grid line { stroke: var(--line); stroke-width: 0.75; }
svg.chart .axes line.axis { stroke: var(--muted); stroke-width: 1; }
svg.chart text { fill: var(--muted); font-size: 10px; font-variant-numeric: tabular-nums; }
.legend { font-size: 0.75rem; color: var(--muted); }
.upstreams { list-style: none; padding: 0; margin: 0.75rem 0; font-size: 0.85rem; }
.upstreams li { display: flex; gap: 0.5rem; flex-wrap: wrap; align-items: baseline; }
.upstreams .origin { font-family: ui-monospace, monospace; overflow-wrap: anywhere; min-width: 0; }
.health { font-weight: 700; }
.health[data-up="true"] { color: var(--closed); }
.health[data-up="false"] { color: var(--open); }
.health[data-rotation="failing"] { color: var(--half-open); }
.upstreams .detail { flex-basis: 100%; color: var(--muted); font-size: 0.8rem; overflow-wrap: anywhere; }
.upstreams li + li { margin-top: 0.35rem; }
.why { margin: 0 0 0.5rem; font-size: 0.9rem; overflow-wrap: anywhere; }
.why:empty { display: none; }
h3.minor { font-size: 0.85rem; color: var(--muted); margin: 0.75rem 0 0.25rem; font-weight: 600; }
.events { list-style: none; padding: 0; margin: 0 0 0.75rem; font-size: 0.8rem; }
.events li { display: flex; gap: 0.5rem; align-items: baseline; overflow-wrap: anywhere; }
.events time { font-variant-numeric: tabular-nums; color: var(--muted); flex: none; }
.events li[data-kind="trip"] .event, .events li[data-kind="reopen"] .event { color: var(--open); }
.events li[data-kind^="force"] .event { color: var(--forced-open); }
.events .empty { color: var(--muted); }
.fleet {
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 0.75rem 1rem; margin: 0 0 1rem;
}
.fleet h2 { margin-bottom: 0.25rem; }
.fleet-summary { margin: 0 0 0.5rem; color: var(--muted); font-size: 0.9rem; }
.table-wrap { overflow-x: auto; }
.fleet table { border-collapse: collapse; width: 100%; font-size: 0.85rem; }
.fleet th, .fleet td { text-align: left; padding: 0.3rem 0.6rem 0.3rem 0; border-top: 1px solid var(--line); vertical-align: top; }
.fleet thead th { border-top: none; color: var(--muted); font-weight: 600; }
.fleet tbody th { font-family: ui-monospace, monospace; font-weight: 600; overflow-wrap: anywhere; }
.fleet tr[data-status="silent"] td:nth-child(2), .fleet tr[data-degraded="true"] td:nth-child(3) { color: var(--open); font-weight: 600; }
.fleet tr[data-status="stopped"] { color: var(--muted); }
dialog input + label { margin-top: 0.75rem; }
.actions { display: flex; flex-wrap: wrap; gap: 0.5rem; }
button {
  font: inherit; padding: 0.4rem 0.8rem; border-radius: 6px; border: 1px solid var(--line);
  background: var(--card); color: var(--text); cursor: pointer; min-height: 2.25rem;
}
button:hover { border-color: var(--focus); }
button[disabled] { opacity: 0.6; cursor: progress; }
button.quiet { background: transparent; }
dialog {
  border: 1px solid var(--line); border-radius: 8px; background: var(--card); color: var(--text);
  width: min(28rem, calc(100vw - 2rem)); padding: 1rem;
}
dialog::backdrop { background: rgb(0 0 0 / 0.4); }
dialog label { display: block; font-weight: 600; margin-bottom: 0.25rem; }
dialog input {
  font: inherit; width: 100%; padding: 0.4rem; border: 1px solid var(--line); border-radius: 6px;
  background: var(--bg); color: var(--text);
}
.dialog-buttons { display: flex; gap: 0.5rem; margin-top: 0.75rem; justify-content: flex-end; flex-wrap: wrap; }
.foot { margin-top: 1.5rem; color: var(--muted); font-size: 0.85rem; }
@media (prefers-reduced-motion: no-preference) {
  .card { transition: border-color 0.3s; }
}
`;
