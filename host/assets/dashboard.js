// pinlock dashboard: live updates and charts. Without this script the page
// still works (it is rendered on the server and reloads itself every 5 s).
//
// Every element with `data-live="URL"` is fetched again every `data-every`
// milliseconds and its content replaced by the server's rendering of it:
// HTML the server escaped, so nothing a job or worker wrote becomes markup.
// The charts are drawn with uPlot (assets/uPlot.iife.min.js) from
// /dashboard/history; their labels are fixed, never data.
"use strict";

(function () {
  const status = document.getElementById("live");
  let failing = false;

  function setStatus(ok, text) {
    if (!status) return;
    status.textContent = text;
    status.className = ok ? "live ok" : "live stale";
  }

  // The page's own query (search, worker filter) goes along with each refresh.
  function withQuery(url) {
    const params = new URLSearchParams(location.search);
    for (const key of [...params.keys()]) {
      if (key !== "q" && key !== "worker") params.delete(key);
    }
    const query = params.toString();
    return query ? url + "?" + query : url;
  }

  async function refresh(element) {
    try {
      const response = await fetch(withQuery(element.dataset.live), {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const html = await response.text();
      if (element.dataset.rendered !== html) {
        element.innerHTML = html;
        element.dataset.rendered = html;
      }
      failing = false;
      setStatus(true, "live · " + new Date().toLocaleTimeString());
    } catch (error) {
      failing = true;
      setStatus(false, "not updating (" + error.message + "); retrying");
    }
  }

  const live = [...document.querySelectorAll("[data-live]")];
  for (const element of live) {
    const every = Math.max(500, Number(element.dataset.every) || 2000);
    setInterval(() => refresh(element), every);
  }
  if (live.length > 0) setStatus(true, "live");

  // Search as you type: the address keeps the search, the locks follow it.
  const search = document.querySelector("form.search input[name=q]");
  if (search) {
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const params = new URLSearchParams(location.search);
        if (search.value) params.set("q", search.value);
        else params.delete("q");
        const query = params.toString();
        history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
        const locks = document.getElementById("locks-body");
        if (locks) refresh(locks);
      }, 250);
    });
  }

  // Charts.
  const charts = document.getElementById("charts");
  if (!charts || typeof uPlot !== "function") return;

  const colors = ["#2563eb", "#d97706", "#dc2626", "#059669", "#7c3aed", "#6b7280"];
  const orZero = (v) => (v === undefined ? 0 : v);
  // A percentile of an interval without samples is a gap, not a zero.
  const spread = (key, p) => (s) => (s[key].count > 0 ? Math.max(s[key][p], 0.001) : null);
  const otherAcquires = (s) =>
    Object.entries(s.acquires)
      .filter(([k]) => !["granted", "taken", "timeout"].includes(k))
      .reduce((sum, [, v]) => sum + v, 0);

  const defs = [
    {
      title: "Lock wait (ms, acquire to grant)",
      log: true,
      series: [
        ["p50", spread("wait_ms", "p50")],
        ["p90", spread("wait_ms", "p90")],
        ["p99", spread("wait_ms", "p99")],
      ],
    },
    {
      title: "Lock hold (ms, grant to release)",
      log: true,
      series: [
        ["p50", spread("hold_ms", "p50")],
        ["p90", spread("hold_ms", "p90")],
        ["p99", spread("hold_ms", "p99")],
      ],
    },
    {
      title: "Acquires per sample, by result",
      series: [
        ["granted", (s) => orZero(s.acquires.granted)],
        ["taken", (s) => orZero(s.acquires.taken)],
        ["timeout", (s) => orZero(s.acquires.timeout)],
        ["other", otherAcquires],
      ],
    },
    {
      title: "Jobs per sample, by result",
      series: [
        ["succeeded", (s) => orZero(s.jobs.succeeded)],
        ["error", (s) => orZero(s.jobs.error)],
        ["cancelled", (s) => orZero(s.jobs.cancelled)],
        ["released", (s) => orZero(s.jobs.released)],
      ],
    },
    {
      title: "Queue depth (due jobs, every host) and jobs running here",
      series: [
        ["queue depth", (s) => (s.queue_depth === null ? null : s.queue_depth)],
        ["running here", (s) => s.running],
      ],
    },
  ];

  const plots = [];
  charts.textContent = "";
  for (const def of defs) {
    const box = document.createElement("div");
    box.className = "chart";
    charts.appendChild(box);
    def.box = box;
  }

  function width(box) {
    return Math.max(280, Math.floor(box.clientWidth || 400));
  }

  function build(def, data) {
    const opts = {
      title: def.title,
      width: width(def.box),
      height: 180,
      scales: { x: { time: true }, y: def.log ? { distr: 3 } : { range: (u, min, max) => [0, Math.max(1, max)] } },
      series: [{}].concat(
        def.series.map(([label], i) => ({ label, stroke: colors[i % colors.length], width: 1.5, spanGaps: false })),
      ),
      axes: [{}, { size: 56 }],
      legend: { live: false },
    };
    return new uPlot(opts, data, def.box);
  }

  async function draw() {
    try {
      const response = await fetch("/dashboard/history", { credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const history = await response.json();
      const samples = history.samples;
      const t = samples.map((s) => s.t);
      defs.forEach((def, i) => {
        const data = [t].concat(def.series.map(([, get]) => samples.map(get)));
        if (plots[i]) plots[i].setData(data);
        else plots[i] = build(def, data);
      });
      charts.dataset.samples = String(samples.length);
    } catch (error) {
      if (!failing) setStatus(false, "charts not updating (" + error.message + ")");
    }
  }

  window.addEventListener("resize", () => {
    plots.forEach((plot, i) => plot.setSize({ width: width(defs[i].box), height: 180 }));
  });
  draw();
  setInterval(draw, Math.max(2000, Number(charts.dataset.every) || 10000));
})();
